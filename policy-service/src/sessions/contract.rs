//! What every session store must do, checked against each (tests only).

use super::{NewSession, SessionStore};
use crate::routes::session::session_problem;
use crate::store::{now, IdpGrant, Store};

/// A fresh permission database (SQLite in memory, or the test PostgreSQL).
pub async fn store() -> Store {
    Store::connect(&crate::store::testing::fresh_database())
        .await
        .unwrap()
}

pub fn new_session(id: &str, user_id: i64, username: &str, now: i64) -> NewSession {
    NewSession {
        id: id.to_string(),
        user_id,
        username: username.to_string(),
        created_at: now,
        expires_at: now + 3600,
        grant: None,
    }
}

pub async fn check(sessions: &dyn SessionStore, store: &Store) {
    let t = now();
    let alice = store
        .record_login("alice", "Alice", false, &["mlflow".into()], t)
        .await
        .unwrap();
    let bob = store
        .record_login("bob", "Bob", false, &["mlflow".into()], t)
        .await
        .unwrap();
    for (id, user, name) in [
        ("s1", alice, "alice"),
        ("s2", alice, "alice"),
        ("s3", bob, "bob"),
    ] {
        sessions
            .create(&new_session(id, user, name, t))
            .await
            .unwrap();
    }

    // An IdP grant is kept with the session, and replaced when the IdP rotates it.
    let grant = |token: &str| IdpGrant {
        subject: "sub-alice".into(),
        sealed_refresh_token: token.into(),
    };
    let mut with_grant = new_session("g1", alice, "alice", t);
    with_grant.grant = Some(grant("sealed-1"));
    sessions.create(&with_grant).await.unwrap();
    assert_eq!(
        sessions.get("g1").await.unwrap().unwrap().grant,
        Some(grant("sealed-1"))
    );
    sessions
        .set_grant("g1", &grant("sealed-2"), t)
        .await
        .unwrap();
    assert_eq!(
        sessions.get("g1").await.unwrap().unwrap().grant,
        Some(grant("sealed-2"))
    );
    assert!(sessions.revoke("g1", t).await.unwrap());

    let s1 = sessions.get("s1").await.unwrap().unwrap();
    assert_eq!(s1.grant, None);
    assert_eq!(s1.id, "s1");
    assert_eq!(s1.user_id, alice);
    assert_eq!(s1.created_at, t);
    assert_eq!(s1.expires_at, t + 3600);
    assert_eq!(s1.revoked_at, None);
    assert_eq!(s1.user.as_ref().map(|u| u.username.as_str()), Some("alice"));
    assert_eq!(session_problem(Some(&s1), t), None);
    assert_eq!(sessions.get("nope").await.unwrap(), None);

    // Revocation is once, and visible.
    assert!(sessions.revoke("s1", t + 1).await.unwrap());
    assert!(!sessions.revoke("s1", t + 2).await.unwrap());
    assert!(!sessions.revoke("nope", t + 2).await.unwrap());
    let s1 = sessions.get("s1").await.unwrap();
    assert_eq!(
        session_problem(s1.as_ref(), t + 2),
        Some("session has ended: it was signed out")
    );
    assert_eq!(sessions.get("s2").await.unwrap().unwrap().revoked_at, None);

    // All of alice's live sessions end; bob's does not.
    assert_eq!(sessions.revoke_all_of_user(alice, t + 3).await.unwrap(), 1);
    assert!(session_problem(sessions.get("s2").await.unwrap().as_ref(), t + 3).is_some());
    assert_eq!(sessions.revoke_all_of_user(alice, t + 4).await.unwrap(), 0);
    let s3 = sessions.get("s3").await.unwrap().unwrap();
    assert_eq!(session_problem(Some(&s3), t + 4), None);
    assert!(!s3.user.unwrap().is_admin);

    // The user is read at every lookup: a promotion shows at once.
    store
        .record_login("bob", "Bob", true, &["mlflow-admin".into()], t + 5)
        .await
        .unwrap();
    assert!(
        sessions
            .get("s3")
            .await
            .unwrap()
            .unwrap()
            .user
            .unwrap()
            .is_admin
    );

    // A deleted user's sessions are over, even when the name comes back.
    store.delete_user(bob).await.unwrap();
    assert!(session_problem(sessions.get("s3").await.unwrap().as_ref(), t + 6).is_some());
    store
        .record_login("bob", "Bob", false, &["mlflow".into()], t + 7)
        .await
        .unwrap();
    assert!(session_problem(sessions.get("s3").await.unwrap().as_ref(), t + 7).is_some());

    // Past its end a session is over.
    sessions
        .create(&new_session("s4", alice, "alice", t))
        .await
        .unwrap();
    let s4 = sessions.get("s4").await.unwrap();
    assert_eq!(
        session_problem(s4.as_ref(), t + 3600),
        Some("session has ended: it expired")
    );
}
