//! Daily send caps against PostgreSQL: concurrent takes never pass the cap, a message
//! given back makes room for one more, and each scope's day is counted on its own.

use shared::db::send_caps::{self, Scope};
use sqlx::PgPool;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use time::{Date, Month};
use uuid::Uuid;

fn day(n: u8) -> Date {
    Date::from_calendar_date(2026, Month::December, n).expect("a date")
}

fn campaign() -> Scope {
    Scope::Campaign(Uuid::now_v7())
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn fifty_concurrent_takes_admit_exactly_the_cap(
    pool_options: PgPoolOptions,
    connect: PgConnectOptions,
) {
    // As many connections as sqlx's test pool allows, all open before the takes start,
    // so the takes race in the server rather than queue for a connection.
    let pool = pool_options
        .max_connections(16)
        .connect_with(connect)
        .await
        .expect("pool");
    let opened = futures::future::join_all((0..16).map(|_| pool.acquire())).await;
    drop(opened);
    let scope = campaign();
    let takes = (0..50).map(|_| {
        let pool = pool.clone();
        tokio::spawn(async move { send_caps::take(&pool, scope, day(7), 10).await })
    });
    let mut admitted = 0;
    for take in futures::future::join_all(takes).await {
        if take.expect("task").expect("take") {
            admitted += 1;
        }
    }
    assert_eq!(admitted, 10);
    assert_eq!(
        send_caps::count(&pool, scope, day(7)).await.expect("count"),
        10
    );
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn a_message_given_back_makes_room_for_one_more(pool: PgPool) {
    let scope = Scope::Account(Uuid::now_v7());
    for _ in 0..3 {
        assert!(
            send_caps::take(&pool, scope, day(7), 3)
                .await
                .expect("take")
        );
    }
    assert!(
        !send_caps::take(&pool, scope, day(7), 3)
            .await
            .expect("take")
    );
    assert!(
        send_caps::give_back(&pool, scope, day(7))
            .await
            .expect("give back")
    );
    assert!(
        send_caps::take(&pool, scope, day(7), 3)
            .await
            .expect("take")
    );
    assert!(
        !send_caps::take(&pool, scope, day(7), 3)
            .await
            .expect("take")
    );
    assert_eq!(
        send_caps::count(&pool, scope, day(7)).await.expect("count"),
        3
    );
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn days_and_scopes_are_counted_apart(pool: PgPool) {
    let (first, second) = (campaign(), campaign());
    assert!(
        send_caps::take(&pool, first, day(7), 1)
            .await
            .expect("take")
    );
    assert!(
        !send_caps::take(&pool, first, day(7), 1)
            .await
            .expect("take")
    );
    assert!(
        send_caps::take(&pool, first, day(8), 1)
            .await
            .expect("take")
    );
    assert!(
        send_caps::take(&pool, second, day(7), 1)
            .await
            .expect("take")
    );
    let Scope::Campaign(id) = first else {
        unreachable!()
    };
    assert!(
        send_caps::take(&pool, Scope::Account(id), day(7), 1)
            .await
            .expect("take")
    );
    assert_eq!(
        send_caps::count(&pool, second, day(8))
            .await
            .expect("count"),
        0
    );
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn giving_back_never_goes_below_zero(pool: PgPool) {
    let scope = campaign();
    assert!(
        !send_caps::give_back(&pool, scope, day(7))
            .await
            .expect("give back")
    );
    assert!(
        send_caps::take(&pool, scope, day(7), 5)
            .await
            .expect("take")
    );
    assert!(
        send_caps::give_back(&pool, scope, day(7))
            .await
            .expect("give back")
    );
    assert!(
        !send_caps::give_back(&pool, scope, day(7))
            .await
            .expect("give back")
    );
    assert_eq!(
        send_caps::count(&pool, scope, day(7)).await.expect("count"),
        0
    );
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn a_cap_of_zero_admits_nothing(pool: PgPool) {
    let scope = campaign();
    assert!(
        !send_caps::take(&pool, scope, day(7), 0)
            .await
            .expect("take")
    );
    assert!(
        send_caps::take(&pool, scope, day(7), 1)
            .await
            .expect("take")
    );
    assert!(
        !send_caps::take(&pool, scope, day(7), 0)
            .await
            .expect("take")
    );
    assert_eq!(
        send_caps::count(&pool, scope, day(7)).await.expect("count"),
        1
    );
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn pruning_forgets_only_the_days_before(pool: PgPool) {
    let scope = campaign();
    for n in 5..=8 {
        assert!(
            send_caps::take(&pool, scope, day(n), 9)
                .await
                .expect("take")
        );
    }
    assert_eq!(
        send_caps::prune_before(&pool, day(7)).await.expect("prune"),
        2
    );
    for (n, left) in [(5, 0), (6, 0), (7, 1), (8, 1)] {
        assert_eq!(
            send_caps::count(&pool, scope, day(n)).await.expect("count"),
            left
        );
    }
}
