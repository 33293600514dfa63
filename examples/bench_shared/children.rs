//! The child processes of bench_shared: each runs one role.

use super::*;

/// Builds the store (buffered, 10,000 per batch, a small record cache),
/// the SQLite database beside it, and the PostgreSQL tables.
pub fn child_load(args: &Args) {
    let started = Instant::now();
    let options = Options::default()
        .durability(Durability::BUFFERED)
        .record_cache(16 << 20)
        .warm_on_open(false);
    let store = tokenstore::SledStore::open_with(&args.store, options).expect("open to load");
    let store = engines::Ours(store);
    store.load(0..args.tokens);
    println!("stat\tload\t{:.1} s", started.elapsed().as_secs_f64());
    let closing = Instant::now();
    store.0.close().expect("close after loading");
    println!(
        "stat\tclose after loading\t{:.1} s",
        closing.elapsed().as_secs_f64()
    );
    // `--index 1`: the peers too (SQLite, PostgreSQL).
    if args.index == 1 {
        let sqlite = Sqlite::open(&args.store.with_extension("sqlite"));
        sqlite.load(0..args.tokens);
        sqlite.close();
        if let Some(url) = &args.pg_url {
            let loading = Instant::now();
            match pg::load(url, args.tokens) {
                Ok(()) => println!(
                    "stat\tPostgreSQL load\t{:.1} s",
                    loading.elapsed().as_secs_f64()
                ),
                Err(why) => println!("stat\tPostgreSQL\t{why}"),
            }
        }
    }
    println!("done");
}

/// Answers every 124-byte frame with a fixed 644-byte one.
pub fn child_echo(args: &Args) {
    let _ = std::fs::remove_file(&args.socket);
    let listener = UnixListener::bind(&args.socket).expect("bind the echo socket");
    println!("ready");
    std::io::stdout().flush().expect("flush");
    std::thread::spawn(|| {
        wait_stdin_line();
        std::process::exit(0);
    });
    for stream in listener.incoming() {
        let mut stream = stream.expect("accept");
        std::thread::spawn(move || {
            let mut request = [0u8; 4 + REQUEST_BYTES];
            let mut answer = [0x5Au8; 4 + ANSWER_BYTES];
            answer[..4].copy_from_slice(&(ANSWER_BYTES as u32).to_le_bytes());
            while stream.read_exact(&mut request).is_ok() {
                if stream.write_all(&answer).is_err() {
                    break;
                }
            }
        });
    }
}

/// Owns the store; once warm, runs the parent's commands from stdin:
/// `writers SECS` (8 writer threads of its own) until stdin closes.
pub fn child_owner(args: &Args) {
    let opened = Instant::now();
    let store = open_shared(&args.store, Role::Owner);
    let open_ms = opened.elapsed().as_secs_f64() * 1e3;
    while thread_running("tokenstore-warm") {
        std::thread::sleep(Duration::from_millis(20));
    }
    println!("ready\t{open_ms:.0}\t{:.1}", opened.elapsed().as_secs_f64());
    std::io::stdout().flush().expect("flush");
    let mut round = 0;
    while let Some(command) = wait_stdin_line() {
        let mut words = command.split_whitespace();
        match (words.next(), words.next()) {
            (Some("writers"), Some(secs)) => {
                round += 1;
                let secs: f64 = secs.parse().expect("seconds");
                let tag = format!("owner{round}");
                let spans: Vec<Span> = std::thread::scope(|s| {
                    let handles: Vec<_> = (0..WRITERS)
                        .map(|k| {
                            let (store, tag) = (&store, &tag);
                            s.spawn(move || save_for(store, k, tag, args.tokens, secs))
                        })
                        .collect();
                    handles
                        .into_iter()
                        .map(|h| h.join().expect("writer"))
                        .collect()
                });
                print_spans(&spans);
            }
            _ => panic!("unknown owner command {command:?}"),
        }
        std::io::stdout().flush().expect("flush");
    }
    drop(store);
}

fn print_spans(spans: &[Span]) {
    for span in spans {
        println!(
            "saves\t{}\t{}\t{}\t{:.1}\t{:.1}",
            span.count, span.start, span.end, span.p50, span.p99
        );
    }
    println!("end");
}

/// The rows of the lookup comparison, measured in the client process.
#[derive(Clone, Copy)]
enum Row {
    Raw,
    Client(Lookup),
    Sqlite,
    Postgres,
}

impl Row {
    fn label(self) -> String {
        match self {
            Row::Raw => {
                format!("raw Unix-socket round trip ({REQUEST_BYTES} B / {ANSWER_BYTES} B)")
            }
            Row::Client(l) => format!("client: {}", l.label()),
            Row::Sqlite => "SQLite opened in this process: find_token by user_name".into(),
            Row::Postgres => "PostgresStore over loopback: find_token by user_name".into(),
        }
    }
}

/// A client of the owner: the lookup rows, interleaved, plus the raw round
/// trip to the echo process.
pub fn child_lookups(args: &Args) {
    let store = open_shared(&args.store, Role::Client);
    let mut raw = UnixStream::connect(&args.socket).expect("connect to the echo process");
    let sqlite = Sqlite::open(&args.store.with_extension("sqlite"));
    let pg = args.pg_url.as_deref().map(pg::open);
    let mut rows = vec![Row::Raw];
    rows.extend(Lookup::ALL.iter().map(|l| Row::Client(*l)));
    rows.push(Row::Sqlite);
    match &pg {
        Some(Ok(_)) => rows.push(Row::Postgres),
        Some(Err(why)) => println!("stat\tPostgresStore\t{why}"),
        None => {}
    }
    let mut request = [0x33u8; 4 + REQUEST_BYTES];
    request[..4].copy_from_slice(&(REQUEST_BYTES as u32).to_le_bytes());
    let mut answer = [0u8; 4 + ANSWER_BYTES];
    let tokens = args.tokens;
    let mut one = |row: Row, n: u64| match row {
        Row::Raw => {
            raw.write_all(&request).expect("raw write");
            raw.read_exact(&mut answer).expect("raw read");
        }
        Row::Client(lookup) => {
            let found = find(&store, &lookup.query(n));
            assert_eq!(found.is_some(), lookup.expects_hit(), "{}", lookup.label());
        }
        Row::Sqlite => assert!(sqlite.find(&Lookup::User.query(n)).is_some()),
        Row::Postgres => {
            let pg = pg.as_ref().and_then(|p| p.as_ref().ok()).expect("pg");
            assert!(pg.find(&Lookup::User.query(n)).is_some());
        }
    };
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    // Warm-up: the owner's caches, SQLite's pages, the connections.
    for row in &rows {
        for _ in 0..args.lookups / 2 {
            one(*row, rng.below(tokens));
        }
    }
    const ROUNDS: usize = 10;
    let per_round = (args.lookups / ROUNDS).max(1);
    let mut times: Vec<Vec<Duration>> = vec![Vec::with_capacity(args.lookups); rows.len()];
    for round in 0..ROUNDS {
        for k in 0..rows.len() {
            let at = (k + round) % rows.len();
            for _ in 0..per_round {
                let n = rng.below(tokens);
                let t = Instant::now();
                one(rows[at], n);
                times[at].push(t.elapsed());
            }
        }
    }
    for (row, mut times) in rows.iter().zip(times) {
        times.sort_unstable();
        println!(
            "row\t{}\t{:.2}\t{:.2}\t{}",
            row.label(),
            percentile(&times, 0.5),
            percentile(&times, 0.99),
            times.len()
        );
    }
    println!("done");
}

/// Client `--index` of the 8 durable writers: opens, says ready, saves for
/// the seconds the parent's `go SECS` line gives.
pub fn child_saver(args: &Args) {
    let store = open_shared(&args.store, Role::Client);
    println!("ready");
    std::io::stdout().flush().expect("flush");
    let command = wait_stdin_line().expect("go SECS");
    let mut words = command.split_whitespace();
    let (Some("go"), Some(secs), Some(tag)) = (words.next(), words.next(), words.next()) else {
        panic!("unexpected {command:?}");
    };
    let secs: f64 = secs.parse().expect("seconds");
    let span = save_for(&store, args.index, tag, args.tokens, secs);
    print_spans(&[span]);
}

/// One idle client: connects, answers one lookup, waits for stdin to close.
pub fn child_idle(args: &Args) {
    let store = open_shared(&args.store, Role::Client);
    assert!(find(&store, &Lookup::User.query(args.index as u64 % args.tokens)).is_some());
    println!("idle\t{}", rss(std::process::id()));
    std::io::stdout().flush().expect("flush");
    wait_stdin_line();
}

/// A client looping `find_token` until it answers as the owner; prints
/// that answer's time (mono_ns) and the longest lookup before it.
pub fn child_waiter(args: &Args) {
    let path = &args.store;
    let store = tokenstore::SharedStore::open(path, Options::default(), Duration::from_secs(10))
        .expect("open the store");
    let sharing = store.sharing().expect("sharing");
    assert_eq!(sharing.role, Role::Client);
    println!("ready\t{}", sharing.owner_pid);
    std::io::stdout().flush().expect("flush");
    let mut rng = Rng(0x2545_F491_4F6C_DD1D);
    let mut lookups = 0u64;
    loop {
        let n = rng.below(args.tokens);
        let started = mono_ns();
        let found = store
            .find_token(&Lookup::User.query(n))
            .expect("find_token");
        let answered = mono_ns();
        assert!(found.is_some());
        lookups += 1;
        if store.sharing().expect("sharing").role == Role::Owner {
            println!("answered\t{answered}\t{started}\t{lookups}");
            break;
        }
    }
    std::io::stdout().flush().expect("flush");
    wait_stdin_line();
    drop(store);
}

// ------------------------------------------------------------- PostgreSQL

#[cfg(feature = "postgres")]
mod pg {
    use crate::engines::token;
    use tokenstore::{OAuthToken, PostgresStore, TokenStore};

    pub struct Pg(PostgresStore);

    pub fn open(url: &str) -> Result<Pg, String> {
        PostgresStore::connect(url)
            .map(Pg)
            .map_err(|e| format!("PostgresStore::connect: {e}"))
    }

    pub fn load(url: &str, tokens: u64) -> Result<(), String> {
        let pg = open(url)?;
        pg.0.delete_tokens().map_err(|e| e.to_string())?;
        let mut n = 0;
        while n < tokens {
            let stop = (n + 1_000).min(tokens);
            pg.0.batch(|batch| (n..stop).try_for_each(|k| batch.save_token(&mut token(k))))
                .map_err(|e: tokenstore::Error| e.to_string())?;
            n = stop;
        }
        Ok(())
    }

    impl Pg {
        pub fn find(&self, query: &OAuthToken) -> Option<OAuthToken> {
            self.0.find_token(query).expect("PostgresStore find_token")
        }
    }
}

#[cfg(not(feature = "postgres"))]
mod pg {
    use tokenstore::OAuthToken;

    pub struct Pg;

    const WHY: &str = "skipped: built without the `postgres` feature";

    pub fn open(_: &str) -> Result<Pg, String> {
        Err(WHY.into())
    }

    pub fn load(_: &str, _: u64) -> Result<(), String> {
        Err(WHY.into())
    }

    impl Pg {
        pub fn find(&self, _: &OAuthToken) -> Option<OAuthToken> {
            None
        }
    }
}
