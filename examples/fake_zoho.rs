//! A fake Zoho accounts server on 127.0.0.1, to try `tokenstore login`,
//! `token`, `refresh` and `revoke` without a Zoho account:
//!
//! ```text
//! cargo run --example fake_zoho -- --port 8765 [--lifetime SECS] [--rotate]
//!     [--behaviour normal|legacy|refuse|invalid-client|rate-limit|malformed|hang]
//!     [--delay-ms MS] [--for SECS]
//! ```
//!
//! It prints its URL, then one line per request (never a secret), and stops
//! after `--for SECS` or when interrupted. It binds 127.0.0.1 only.

#[path = "../tests/support/fake_zoho.rs"]
mod fake_zoho;

use std::time::{Duration, Instant};

use fake_zoho::{Behaviour, FakeZoho};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut port = 8765u16;
    let mut lifetime = 3600i64;
    let mut rotate = false;
    let mut behaviour = Behaviour::Normal;
    let mut delay_ms = 0u64;
    let mut run_for: Option<u64> = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().ok_or_else(|| format!("{arg} needs a value"));
        match arg.as_str() {
            "--port" => port = value()?.parse()?,
            "--lifetime" => lifetime = value()?.parse()?,
            "--rotate" => rotate = true,
            "--behaviour" => behaviour = value()?.parse()?,
            "--delay-ms" => delay_ms = value()?.parse()?,
            "--for" => run_for = Some(value()?.parse()?),
            "-h" | "--help" => {
                println!(
                    "usage: fake_zoho [--port 8765] [--lifetime SECS] [--rotate] \
                     [--behaviour normal|legacy|refuse|invalid-client|rate-limit|malformed|hang] \
                     [--delay-ms MS] [--for SECS]"
                );
                return Ok(());
            }
            other => return Err(format!("unknown argument {other:?} (see --help)").into()),
        }
    }
    let server = FakeZoho::start_on(port)?;
    server.set_lifetime_secs(lifetime);
    server.set_rotate(rotate);
    server.set_behaviour(behaviour);
    server.set_delay(Duration::from_millis(delay_ms));
    server.set_log(true);
    println!("fake Zoho accounts server listening on {}", server.url());
    println!(
        "  access tokens live {lifetime} s; refresh tokens {}; answers: {behaviour:?}",
        if rotate { "rotate" } else { "stay" }
    );
    println!("  try: export TOKENSTORE_ACCOUNTS_URL={}", server.url());
    let started = Instant::now();
    loop {
        std::thread::sleep(Duration::from_millis(200));
        if run_for.is_some_and(|secs| started.elapsed() >= Duration::from_secs(secs)) {
            break;
        }
    }
    eprintln!(
        "fake_zoho: stopping after {} login(s), {} refresh(es), {} revoke(s)",
        server.logins(),
        server.refreshes(),
        server.revokes()
    );
    Ok(())
}
