//! The cases, each a statement of docs/SPEC.md proven against one store.

use std::collections::HashSet;

use tokenstore::{Error, IndexedField, OAuthToken, TokenStore};

use crate::tokens::zoho;

type Store = dyn TokenStore + Send + Sync;

fn saved(store: &Store, mut token: OAuthToken) -> OAuthToken {
    store.save_token(&mut token).expect("save");
    token
}

fn id_of(token: &OAuthToken) -> &str {
    token.id.as_deref().expect("saved tokens have an id")
}

fn creds(token: OAuthToken) -> OAuthToken {
    token
        .with_client_id("any-client")
        .with_client_secret("any-secret")
}

fn sorted(mut tokens: Vec<OAuthToken>) -> Vec<OAuthToken> {
    tokens.sort_by(|a, b| a.id.cmp(&b.id));
    tokens
}

// ---- §2 the lookup key ----

pub fn rule1_user_name_decides_even_without_a_match(store: &Store) {
    let ana = saved(store, zoho("ana@example.com", "a"));
    let bob = saved(store, zoho("bob@example.com", "b"));
    // user_name wins over the access token of another record
    let query = OAuthToken::new()
        .with_user_name("ana@example.com")
        .with_access_token("1000.access-b");
    assert_eq!(store.find_token(&query).unwrap(), Some(ana.clone()));
    // an unknown user finds nothing, though every other field matches bob
    let query = OAuthToken {
        user_name: Some("nobody@example.com".into()),
        ..bob.clone()
    };
    assert_eq!(store.find_token(&query).unwrap(), None);
}

pub fn rule2_access_token_without_client_credentials(store: &Store) {
    let ana = saved(store, zoho("ana@example.com", "a"));
    let other = saved(store, zoho("bob@example.com", "b"));
    let query = OAuthToken::new().with_access_token("1000.access-a");
    assert_eq!(store.find_token(&query).unwrap(), Some(ana));
    // rule 2 holds and finds nothing: the id (rule 4) is not tried
    let query = OAuthToken::new()
        .with_access_token("1000.access-unknown")
        .with_id(id_of(&other));
    assert_eq!(store.find_token(&query).unwrap(), None);
}

pub fn rule2_does_not_hold_with_client_credentials(store: &Store) {
    let ana = saved(store, zoho("ana@example.com", "a"));
    // access token plus both credentials, no grant/refresh: rules 2 and 3 fail
    let query = creds(OAuthToken::new().with_access_token("1000.access-a"));
    assert_eq!(store.find_token(&query).unwrap(), None);
    // with only one credential, rule 2 fails too; the id decides
    let query = OAuthToken::new()
        .with_access_token("1000.access-a")
        .with_client_id("c")
        .with_id(id_of(&ana));
    assert_eq!(store.find_token(&query).unwrap(), Some(ana.clone()));
    let query = OAuthToken::new()
        .with_access_token("1000.access-a")
        .with_client_secret("s");
    assert_eq!(store.find_token(&query).unwrap(), None);
}

pub fn rule3_grant_token_first(store: &Store) {
    let ana = saved(store, zoho("ana@example.com", "a"));
    let bob = saved(store, zoho("bob@example.com", "b"));
    // grant of ana, refresh of bob: the grant decides
    let query = creds(
        OAuthToken::new()
            .with_grant_token("1000.grant-a")
            .with_refresh_token("1000.refresh-b"),
    );
    assert_eq!(store.find_token(&query).unwrap(), Some(ana));
    let query = creds(OAuthToken::new().with_refresh_token("1000.refresh-b"));
    assert_eq!(store.find_token(&query).unwrap(), Some(bob));
}

pub fn rule3_falls_back_to_refresh_when_grant_misses(store: &Store) {
    let bob = saved(store, zoho("bob@example.com", "b"));
    let query = creds(
        OAuthToken::new()
            .with_grant_token("1000.grant-used-up")
            .with_refresh_token("1000.refresh-b"),
    );
    assert_eq!(store.find_token(&query).unwrap(), Some(bob));
}

pub fn rule3_needs_both_client_credentials(store: &Store) {
    let ana = saved(store, zoho("ana@example.com", "a"));
    let only_id = OAuthToken::new()
        .with_refresh_token("1000.refresh-a")
        .with_client_id("c");
    assert_eq!(store.find_token(&only_id).unwrap(), None);
    let only_secret = OAuthToken::new()
        .with_grant_token("1000.grant-a")
        .with_client_secret("s");
    assert_eq!(store.find_token(&only_secret).unwrap(), None);
    // credentials are checked for presence, never compared
    let query = creds(OAuthToken::new().with_refresh_token("1000.refresh-a"));
    assert_eq!(store.find_token(&query).unwrap(), Some(ana));
}

pub fn rule3_grant_miss_without_refresh_finds_nothing(store: &Store) {
    let ana = saved(store, zoho("ana@example.com", "a"));
    // rule 3 holds (grant + credentials) and misses; the id is not tried
    let query = creds(
        OAuthToken::new()
            .with_grant_token("1000.grant-unknown")
            .with_id(id_of(&ana)),
    );
    assert_eq!(store.find_token(&query).unwrap(), None);
}

pub fn rule4_id_only_query(store: &Store) {
    let ana = saved(store, zoho("ana@example.com", "a"));
    let query = OAuthToken::new().with_id(id_of(&ana));
    assert_eq!(store.find_token(&query).unwrap(), Some(ana.clone()));
    // the SDK's revoke() sends an id with client credentials only
    let query = creds(OAuthToken::new().with_id(id_of(&ana)));
    assert_eq!(store.find_token(&query).unwrap(), Some(ana));
    let query = OAuthToken::new().with_id("no-such-id");
    assert_eq!(store.find_token(&query).unwrap(), None);
}

pub fn rule5_never_the_first_record(store: &Store) {
    saved(store, zoho("ana@example.com", "a"));
    saved(store, zoho("bob@example.com", "b"));
    for query in [
        OAuthToken::new(),
        creds(OAuthToken::new()),
        OAuthToken::new()
            .with_expiry_time(1_700_000_000_000)
            .with_api_domain("https://www.zohoapis.com")
            .with_redirect_url("https://example.com/callback"),
    ] {
        assert_eq!(store.find_token(&query).unwrap(), None, "{query:?}");
    }
}

// ---- §1 empty means absent ----

pub fn empty_strings_are_absent(store: &Store) {
    let mut token = OAuthToken::new()
        .with_id("")
        .with_user_name("ana@example.com")
        .with_client_id("")
        .with_client_secret("")
        .with_refresh_token("1000.refresh")
        .with_access_token("")
        .with_grant_token("")
        .with_redirect_url("")
        .with_api_domain("");
    store.save_token(&mut token).unwrap();
    let stored = store.find_token_by_id(id_of(&token)).unwrap().unwrap();
    assert_eq!(stored, token);
    assert_eq!(
        stored,
        OAuthToken::new()
            .with_id(id_of(&token))
            .with_user_name("ana@example.com")
            .with_refresh_token("1000.refresh")
    );
    // an empty user name falls through to the next rule
    let query = OAuthToken::new().with_user_name("").with_id(id_of(&token));
    assert_eq!(store.find_token(&query).unwrap(), Some(stored));
}

pub fn empty_user_name_never_finds_another_user(store: &Store) {
    saved(store, zoho("ana@example.com", "a"));
    let query = OAuthToken::new()
        .with_user_name("")
        .with_client_id("1000.CLIENTID");
    assert_eq!(store.find_token(&query).unwrap(), None);
    // saving a token with an empty user name creates a new record rather than
    // overwriting ana's
    let mut fresh = OAuthToken::new()
        .with_user_name("")
        .with_access_token("1000.access-new");
    store.save_token(&mut fresh).unwrap();
    assert_eq!(store.get_tokens().unwrap().len(), 2);
    let ana = store
        .find_token(&OAuthToken::new().with_user_name("ana@example.com"))
        .unwrap()
        .unwrap();
    assert_eq!(ana.access_token.as_deref(), Some("1000.access-a"));
}

pub fn empty_id_finds_and_deletes_nothing(store: &Store) {
    saved(store, zoho("ana@example.com", "a"));
    assert_eq!(store.find_token_by_id("").unwrap(), None);
    assert!(!store.delete_token("").unwrap());
    assert_eq!(store.get_tokens().unwrap().len(), 1);
}

// ---- values are data ----

pub fn hostile_values_are_plain_data(store: &Store) {
    let values = [
        "O'Brien@example.com",
        "'; DROP TABLE oauthtoken; --",
        "x' OR '1'='1",
        "\"double\" \\back\\slash",
        "名前@例え.jp ✓ émoji 🦀",
        "nul\0inside\0",
        "line\nbreak\r\n",
        "%_* wildcard?",
    ];
    let mut ids = Vec::new();
    for (n, value) in values.iter().enumerate() {
        let token = saved(
            store,
            OAuthToken::new()
                .with_user_name(*value)
                .with_access_token(format!("{value}-access"))
                .with_refresh_token(format!("{value}-refresh"))
                .with_grant_token(format!("{value}-grant"))
                .with_client_id(format!("{value}-client-{n}")),
        );
        ids.push(token);
    }
    assert_eq!(store.get_tokens().unwrap().len(), values.len());
    for (value, token) in values.iter().zip(&ids) {
        let by_user = OAuthToken::new().with_user_name(*value);
        assert_eq!(store.find_token(&by_user).unwrap().as_ref(), Some(token));
        let by_access = OAuthToken::new().with_access_token(format!("{value}-access"));
        assert_eq!(store.find_token(&by_access).unwrap().as_ref(), Some(token));
        let by_refresh = creds(OAuthToken::new().with_refresh_token(format!("{value}-refresh")));
        assert_eq!(store.find_token(&by_refresh).unwrap().as_ref(), Some(token));
        let by_grant = creds(OAuthToken::new().with_grant_token(format!("{value}-grant")));
        assert_eq!(store.find_token(&by_grant).unwrap().as_ref(), Some(token));
        assert_eq!(
            store.find_token_by_id(id_of(token)).unwrap().as_ref(),
            Some(token)
        );
    }
    // a hostile id is just an id
    let evil_id = "1; DELETE FROM oauthtoken";
    let token = saved(
        store,
        OAuthToken::new()
            .with_id(evil_id)
            .with_access_token("plain"),
    );
    assert_eq!(store.find_token_by_id(evil_id).unwrap(), Some(token));
    assert_eq!(store.get_tokens().unwrap().len(), values.len() + 1);
}

pub fn large_values_round_trip(store: &Store) {
    let big = |c: char| c.to_string().repeat(64 * 1024);
    let token = saved(
        store,
        OAuthToken::new()
            .with_user_name(big('u'))
            .with_access_token(big('a'))
            .with_refresh_token(big('r'))
            .with_grant_token(big('g'))
            .with_client_secret(big('s'))
            .with_redirect_url(big('x')),
    );
    assert_eq!(
        store.find_token_by_id(id_of(&token)).unwrap().as_ref(),
        Some(&token)
    );
    let query = OAuthToken::new().with_access_token(big('a'));
    assert_eq!(store.find_token(&query).unwrap(), Some(token.clone()));
    // a value differing in the last byte is another value
    let mut almost = big('a');
    almost.pop();
    almost.push('b');
    let query = OAuthToken::new().with_access_token(almost);
    assert_eq!(store.find_token(&query).unwrap(), None);
}

pub fn lookups_are_case_sensitive(store: &Store) {
    let lower = saved(store, zoho("ana@example.com", "a"));
    let upper = saved(store, zoho("Ana@Example.com", "A"));
    assert_ne!(lower.id, upper.id);
    let query = OAuthToken::new().with_user_name("ANA@EXAMPLE.COM");
    assert_eq!(store.find_token(&query).unwrap(), None);
    let query = OAuthToken::new().with_access_token("1000.ACCESS-A");
    assert_eq!(store.find_token(&query).unwrap(), None);
    let query = OAuthToken::new().with_user_name("Ana@Example.com");
    assert_eq!(store.find_token(&query).unwrap(), Some(upper));
}

// ---- §3 save_token ----

pub fn find_returns_the_stored_record_not_the_query(store: &Store) {
    let ana = saved(store, zoho("ana@example.com", "a"));
    let query = OAuthToken::new()
        .with_user_name("ana@example.com")
        .with_api_domain("https://query-only.example");
    let found = store.find_token(&query).unwrap().unwrap();
    assert_eq!(found, ana);
    assert_eq!(store.get_tokens().unwrap(), vec![ana]);
}

pub fn save_sets_the_token_to_what_is_stored(store: &Store) {
    let ana = saved(store, zoho("ana@example.com", "a"));
    let mut update = OAuthToken::new()
        .with_user_name("ana@example.com")
        .with_access_token("1000.access-2")
        .with_expiry_time(42);
    store.save_token(&mut update).unwrap();
    let stored = store.find_token_by_id(id_of(&ana)).unwrap().unwrap();
    assert_eq!(update, stored);
    assert_eq!(update.id, ana.id);
    assert_eq!(
        update.refresh_token, ana.refresh_token,
        "absent fields are filled in"
    );
}

pub fn save_merges_and_never_clears(store: &Store) {
    let ana = saved(store, zoho("ana@example.com", "a"));
    let mut update = OAuthToken {
        id: ana.id.clone(),
        user_name: None,
        client_id: Some(String::new()),
        client_secret: None,
        refresh_token: Some(String::new()),
        access_token: Some("1000.access-2".into()),
        grant_token: None,
        expiry_time: None,
        redirect_url: Some(String::new()),
        api_domain: None,
    };
    store.save_token(&mut update).unwrap();
    let expected = OAuthToken {
        access_token: Some("1000.access-2".into()),
        ..ana
    };
    assert_eq!(update, expected);
    assert_eq!(store.get_tokens().unwrap(), vec![expected]);
}

pub fn save_without_any_token_is_rejected_and_writes_nothing(store: &Store) {
    let ana = saved(store, zoho("ana@example.com", "a"));
    let attempts = [
        OAuthToken::new().with_user_name("bob@example.com"),
        // the target record holds tokens, but the token as passed has none
        OAuthToken::new()
            .with_user_name("ana@example.com")
            .with_api_domain("https://changed.example"),
        OAuthToken::new()
            .with_id(id_of(&ana))
            .with_access_token("")
            .with_refresh_token("")
            .with_grant_token("")
            .with_expiry_time(1),
    ];
    for attempt in attempts {
        let mut token = attempt.clone();
        let err = store.save_token(&mut token).unwrap_err();
        assert!(matches!(err, Error::InvalidToken { .. }), "{err:?}");
        assert_eq!(token, attempt, "a failed save leaves the token untouched");
    }
    assert_eq!(store.get_tokens().unwrap(), vec![ana]);
}

pub fn save_with_unknown_id_inserts_under_that_id(store: &Store) {
    let token = saved(
        store,
        OAuthToken::new()
            .with_id("chosen-id")
            .with_user_name("ana@example.com")
            .with_refresh_token("r"),
    );
    assert_eq!(token.id.as_deref(), Some("chosen-id"));
    assert_eq!(store.find_token_by_id("chosen-id").unwrap(), Some(token));
}

pub fn save_without_id_upserts_by_lookup_key(store: &Store) {
    let ana = saved(store, zoho("ana@example.com", "a"));
    // rule 3: refresh + credentials finds ana; the new access token lands there
    let mut refresh = creds(
        OAuthToken::new()
            .with_refresh_token("1000.refresh-a")
            .with_access_token("1000.access-refreshed"),
    );
    store.save_token(&mut refresh).unwrap();
    assert_eq!(refresh.id, ana.id);
    assert_eq!(refresh.user_name, ana.user_name);
    // the credentials in the query are stored too (present fields overwrite)
    assert_eq!(refresh.client_id.as_deref(), Some("any-client"));
    // rule 2: access token alone finds ana
    let mut by_access = OAuthToken::new()
        .with_access_token("1000.access-refreshed")
        .with_expiry_time(7);
    store.save_token(&mut by_access).unwrap();
    assert_eq!(by_access.id, ana.id);
    assert_eq!(store.get_tokens().unwrap().len(), 1);
    // no rule matches: a new record
    let mut new = OAuthToken::new().with_access_token("1000.other");
    store.save_token(&mut new).unwrap();
    assert_ne!(new.id, ana.id);
    assert_eq!(store.get_tokens().unwrap().len(), 2);
}

pub fn conflicting_unique_value_writes_nothing(store: &Store) {
    let ana = saved(store, zoho("ana@example.com", "a"));
    let bob = saved(store, zoho("bob@example.com", "b"));
    for (field, attempt) in [
        (
            IndexedField::AccessToken,
            OAuthToken::new()
                .with_user_name("bob@example.com")
                .with_access_token("1000.access-a")
                .with_api_domain("https://changed.example"),
        ),
        (
            IndexedField::RefreshToken,
            OAuthToken::new()
                .with_user_name("bob@example.com")
                .with_refresh_token("1000.refresh-a"),
        ),
        (
            IndexedField::GrantToken,
            OAuthToken::new()
                .with_user_name("carol@example.com")
                .with_grant_token("1000.grant-a"),
        ),
    ] {
        let mut token = attempt.clone();
        match store.save_token(&mut token) {
            Err(Error::Conflict { field: f, id }) => {
                assert_eq!(f, field);
                assert_eq!(Some(id.as_str()), ana.id.as_deref());
            }
            other => panic!("expected a conflict on {field}, got {other:?}"),
        }
        assert_eq!(token, attempt, "a failed save leaves the token untouched");
    }
    assert_eq!(
        sorted(store.get_tokens().unwrap()),
        sorted(vec![ana.clone(), bob])
    );
    // the failed insert of carol took no id: the next generated id follows bob's
    let carol = saved(store, zoho("carol@example.com", "c"));
    assert_eq!(carol.id.as_deref(), Some("3"));
}

pub fn conflict_through_an_id_targeted_save(store: &Store) {
    let ana = saved(store, zoho("ana@example.com", "a"));
    let bob = saved(store, zoho("bob@example.com", "b"));
    let mut rename = OAuthToken::new()
        .with_id(id_of(&bob))
        .with_user_name("ana@example.com")
        .with_access_token("1000.access-b2");
    let err = store.save_token(&mut rename).unwrap_err();
    match &err {
        Error::Conflict { field, id } => {
            assert_eq!(*field, IndexedField::UserName);
            assert_eq!(Some(id.as_str()), ana.id.as_deref());
        }
        other => panic!("expected a user_name conflict, got {other:?}"),
    }
    assert_eq!(store.find_token_by_id(id_of(&bob)).unwrap(), Some(bob));
    // an insert under a new id with a taken value conflicts too, and leaves no record
    let mut insert = OAuthToken::new()
        .with_id("fresh")
        .with_refresh_token("1000.refresh-a");
    assert!(matches!(
        store.save_token(&mut insert),
        Err(Error::Conflict {
            field: IndexedField::RefreshToken,
            ..
        })
    ));
    assert_eq!(store.find_token_by_id("fresh").unwrap(), None);
}

pub fn conflict_errors_never_show_the_secret(store: &Store) {
    saved(store, zoho("ana@example.com", "topsecret"));
    let mut token = OAuthToken::new()
        .with_user_name("bob@example.com")
        .with_refresh_token("1000.refresh-topsecret");
    let err = store.save_token(&mut token).unwrap_err();
    assert!(err.to_string().contains("refresh_token"), "{err}");
    assert!(
        err.to_string().contains("\"1\""),
        "names the holding id: {err}"
    );
    for shown in [err.to_string(), format!("{err:?}")] {
        assert!(!shown.contains("topsecret"), "{shown}");
    }
}

pub fn rotated_values_no_longer_find_the_record(store: &Store) {
    let ana = saved(store, zoho("ana@example.com", "a"));
    let mut rotated = OAuthToken::new()
        .with_user_name("ana@example.com")
        .with_refresh_token("1000.refresh-a2")
        .with_access_token("1000.access-a2")
        .with_grant_token("1000.grant-a2");
    store.save_token(&mut rotated).unwrap();
    for old in [
        creds(OAuthToken::new().with_refresh_token("1000.refresh-a")),
        creds(OAuthToken::new().with_grant_token("1000.grant-a")),
        OAuthToken::new().with_access_token("1000.access-a"),
    ] {
        assert_eq!(store.find_token(&old).unwrap(), None, "{old:?}");
    }
    let new = creds(OAuthToken::new().with_refresh_token("1000.refresh-a2"));
    assert_eq!(store.find_token(&new).unwrap().map(|t| t.id), Some(ana.id));
    // the freed values can now go to another record
    saved(store, zoho("bob@example.com", "a"));
    assert_eq!(store.get_tokens().unwrap().len(), 2);
    // renaming frees the old user name too
    let mut renamed = OAuthToken::new()
        .with_id(id_of(&rotated))
        .with_user_name("ana.new@example.com")
        .with_access_token("1000.access-a3");
    store.save_token(&mut renamed).unwrap();
    let query = OAuthToken::new().with_user_name("ana@example.com");
    assert_eq!(store.find_token(&query).unwrap(), None);
}

pub fn generated_ids_pass_ten_and_skip_taken_ids(store: &Store) {
    // caller-chosen ids that the counter will reach
    for chosen in ["3", "12", "13"] {
        saved(
            store,
            OAuthToken::new()
                .with_id(chosen)
                .with_access_token(format!("chosen-{chosen}")),
        );
    }
    let mut generated = Vec::new();
    for n in 0..20 {
        let token = saved(
            store,
            OAuthToken::new().with_access_token(format!("generated-{n}")),
        );
        generated.push(token.id.unwrap());
    }
    let expected: Vec<String> = (1..=23)
        .filter(|n| ![3, 12, 13].contains(n))
        .map(|n| n.to_string())
        .collect();
    assert_eq!(generated, expected);
    assert_eq!(store.get_tokens().unwrap().len(), 23);
}

pub fn deleted_ids_are_never_handed_out_again(store: &Store) {
    let first = saved(store, zoho("ana@example.com", "a"));
    let second = saved(store, zoho("bob@example.com", "b"));
    assert!(store.delete_token(id_of(&second)).unwrap());
    assert_eq!(store.delete_tokens().unwrap(), 1);
    let third = saved(store, zoho("carol@example.com", "c"));
    let seen: HashSet<_> = [&first, &second, &third]
        .iter()
        .map(|t| t.id.clone())
        .collect();
    assert_eq!(seen.len(), 3, "ids: {seen:?}");
    assert_eq!(third.id.as_deref(), Some("3"));
}

pub fn delete_frees_every_key(store: &Store) {
    let ana = saved(store, zoho("ana@example.com", "a"));
    assert!(store.delete_token(id_of(&ana)).unwrap());
    assert!(!store.delete_token(id_of(&ana)).unwrap());
    assert_eq!(store.find_token_by_id(id_of(&ana)).unwrap(), None);
    for query in [
        OAuthToken::new().with_user_name("ana@example.com"),
        OAuthToken::new().with_access_token("1000.access-a"),
        creds(OAuthToken::new().with_refresh_token("1000.refresh-a")),
        creds(OAuthToken::new().with_grant_token("1000.grant-a")),
    ] {
        assert_eq!(store.find_token(&query).unwrap(), None, "{query:?}");
    }
    // every value can be taken again, by a new record
    let again = saved(store, zoho("ana@example.com", "a"));
    assert_ne!(again.id, ana.id);
}

pub fn delete_tokens_removes_everything_and_counts(store: &Store) {
    assert_eq!(store.delete_tokens().unwrap(), 0);
    for n in 0..5 {
        saved(store, zoho(&format!("user{n}@example.com"), &n.to_string()));
    }
    assert_eq!(store.delete_tokens().unwrap(), 5);
    assert_eq!(store.get_tokens().unwrap(), vec![]);
    let query = OAuthToken::new().with_user_name("user0@example.com");
    assert_eq!(store.find_token(&query).unwrap(), None);
    saved(store, zoho("user0@example.com", "0"));
    assert_eq!(store.get_tokens().unwrap().len(), 1);
}

pub fn get_tokens_returns_every_record(store: &Store) {
    let mut expected = Vec::new();
    for n in 0..12 {
        expected.push(saved(
            store,
            zoho(&format!("user{n}@example.com"), &n.to_string()),
        ));
    }
    assert_eq!(sorted(store.get_tokens().unwrap()), sorted(expected));
}

// ---- serializable saves ----

pub fn concurrent_saves_of_one_new_user_make_one_record(store: &Store) {
    std::thread::scope(|scope| {
        for thread in 0..8 {
            scope.spawn(move || {
                for round in 0..5 {
                    let mut token = OAuthToken::new()
                        .with_user_name("shared@example.com")
                        .with_access_token(format!("1000.access-{thread}-{round}"));
                    store.save_token(&mut token).unwrap();
                }
            });
        }
    });
    let tokens = store.get_tokens().unwrap();
    assert_eq!(tokens.len(), 1, "{tokens:?}");
    // the surviving access token is one of those saved, and finds the record
    let access = tokens[0].access_token.clone().unwrap();
    let query = OAuthToken::new().with_access_token(access);
    assert_eq!(store.find_token(&query).unwrap(), Some(tokens[0].clone()));
}

pub fn concurrent_saves_of_distinct_users_all_land(store: &Store) {
    std::thread::scope(|scope| {
        for thread in 0..8 {
            scope.spawn(move || {
                for n in 0..10 {
                    saved(
                        store,
                        zoho(
                            &format!("u{thread}-{n}@example.com"),
                            &format!("{thread}-{n}"),
                        ),
                    );
                }
            });
        }
    });
    let tokens = store.get_tokens().unwrap();
    assert_eq!(tokens.len(), 80);
    let ids: HashSet<_> = tokens.iter().map(|t| t.id.clone().unwrap()).collect();
    let expected: HashSet<_> = (1..=80).map(|n| n.to_string()).collect();
    assert_eq!(ids, expected);
}

// ---- secrets never shown ----

pub fn debug_never_shows_a_secret(store: &Store) {
    let token = saved(store, zoho("ana@example.com", "MARKER"));
    let shown = format!("{token:?} {token:#?}");
    assert!(!shown.contains("MARKER"), "{shown}");
    assert!(shown.contains("ana@example.com"));
    assert!(shown.contains("[redacted]"));
    let found = store.find_token_by_id(id_of(&token)).unwrap();
    assert!(!format!("{found:?}").contains("MARKER"));
    let all = store.get_tokens().unwrap();
    assert!(!format!("{all:?}").contains("MARKER"));
}
