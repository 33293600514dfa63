//! `PostgresStore` across a server restart: clear errors while the server
//! is down, then work resumes and nothing acknowledged is lost. Needs a
//! server: run tests/postgres/run.sh, which sets `TOKENSTORE_TEST_PG_RESTART`
//! and runs this binary alone, last (it restarts the server under every
//! connection). Without the variables the test prints SKIPPED.

#[path = "support/postgres.rs"]
mod postgres_db;

use std::collections::HashSet;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use postgres_db::TestDb;
use tokenstore::{Error, OAuthToken, PostgresOptions, PostgresStore, TokenStore};

#[test]
fn the_server_restarted_mid_run_gives_clear_errors_then_work_resumes() {
    let Some(db) = TestDb::new("the_server_restarted_mid_run") else {
        return;
    };
    let Ok(restart) = std::env::var("TOKENSTORE_TEST_PG_RESTART") else {
        let message =
            "SKIPPED the_server_restarted_mid_run: TOKENSTORE_TEST_PG_RESTART is not set \
                       (tests/postgres/run.sh sets it)";
        assert!(std::env::var("CI").as_deref() != Ok("true"), "{message}");
        eprintln!("{message}");
        return;
    };
    let options = PostgresOptions::default()
        .connect_timeout(Duration::from_secs(2))
        .pool_wait(Duration::from_secs(2));
    let store = PostgresStore::connect_with(&db.url, options).unwrap();
    let restarted = AtomicBool::new(false);
    let after_restart = AtomicUsize::new(0);
    // (key, access) of every acknowledged save; keys whose save surely failed;
    // keys whose outcome is unknown.
    let acked = Mutex::new(Vec::new());
    let failed = Mutex::new(Vec::new());
    let unknown = Mutex::new(Vec::new());
    let errors = Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for t in 0..4 {
            let (store, restarted, after_restart) = (&store, &restarted, &after_restart);
            let (acked, failed, unknown, errors) = (&acked, &failed, &unknown, &errors);
            scope.spawn(move || {
                let deadline = Instant::now() + Duration::from_secs(60);
                for k in 0.. {
                    if after_restart.load(Ordering::SeqCst) >= 200 || Instant::now() > deadline {
                        break;
                    }
                    let user = format!("t{t}-{k}@example.com");
                    let mut token = OAuthToken::new()
                        .with_user_name(user.clone())
                        .with_access_token(format!("1000.access-{t}-{k}"));
                    match store.save_token(&mut token) {
                        Ok(()) => {
                            acked.lock().unwrap().push(user);
                            if restarted.load(Ordering::SeqCst) {
                                after_restart.fetch_add(1, Ordering::SeqCst);
                            }
                        }
                        Err(
                            e @ Error::Unavailable {
                                maybe_committed, ..
                            },
                        ) => {
                            let shown = e.to_string();
                            assert!(shown.contains("unavailable"), "{shown}");
                            assert!(!shown.contains("1000.access"), "{shown}");
                            if maybe_committed {
                                unknown.lock().unwrap().push(user);
                            } else {
                                failed.lock().unwrap().push(user);
                            }
                            errors.lock().unwrap().push(true);
                            std::thread::sleep(Duration::from_millis(50));
                        }
                        Err(other) => panic!("not a clear error: {other:?} ({other})"),
                    }
                }
            });
        }
        std::thread::sleep(Duration::from_millis(500));
        let status = Command::new("sh")
            .args(["-c", &restart])
            .stdout(Stdio::null())
            .status()
            .unwrap();
        assert!(status.success(), "restart: {status}");
        restarted.store(true, Ordering::SeqCst);
    });
    assert!(
        after_restart.load(Ordering::SeqCst) >= 200,
        "work resumed after the restart"
    );
    let stored: HashSet<String> = store
        .get_tokens()
        .unwrap()
        .into_iter()
        .map(|t| t.user_name.unwrap())
        .collect();
    let acked = acked.into_inner().unwrap();
    let lost = acked.iter().filter(|u| !stored.contains(*u)).count();
    eprintln!(
        "FIGURES restart: {} acknowledged, {lost} lost, {} errors ({} surely not written, \
         {} outcome unknown)",
        acked.len(),
        errors.lock().unwrap().len(),
        failed.lock().unwrap().len(),
        unknown.lock().unwrap().len()
    );
    assert_eq!(lost, 0);
    let failed = failed.into_inner().unwrap();
    assert!(
        failed.iter().all(|u| !stored.contains(u)),
        "a save that failed without maybe_committed wrote nothing"
    );
    let report = store.check().unwrap();
    assert!(report.is_ok(), "{report}");
}
