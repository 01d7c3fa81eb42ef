//! The send-window and daily-cap check (`worker::caps`) against the real PostgreSQL:
//! a closed window makes a message wait until it opens, taking nothing; a campaign's
//! cap and an account's cap (its warm-up's cap of the day) admit exactly that many
//! across two workers' checks at once, the rest wait until the next local day; an
//! admission given back makes room for one more.

use std::sync::Arc;

use shared::db::sending_limits;
use shared::mail::window::{SendWindow, SendWindowFields, Warmup};
use sqlx::PgPool;
use time::OffsetDateTime;
use time::macros::datetime;
use uuid::Uuid;
use worker::caps::{CampaignLimits, Caps, Taken};

async fn owner(pool: &PgPool) -> Uuid {
    let id = Uuid::now_v7();
    sqlx::query(
        "INSERT INTO users (id, email_ciphertext, email_index, password_hash) \
         VALUES ($1, '\\x00', $2, 'unused')",
    )
    .bind(id)
    .bind(id.as_bytes().to_vec())
    .execute(pool)
    .await
    .expect("user");
    id
}

fn window(zone: &str, days: &[&str], start: &str, end: &str) -> SendWindow {
    SendWindow::parse(SendWindowFields {
        time_zone: zone.into(),
        days: days.iter().map(|d| (*d).to_owned()).collect(),
        start: start.into(),
        end: end.into(),
    })
    .expect("a valid window")
}

/// Admits `n` messages at `now` through two `Caps` (two workers) at once; how many
/// were admitted.
async fn admit_many(
    caps: &[Arc<Caps>; 2],
    n: usize,
    now: OffsetDateTime,
    owner: Option<Uuid>,
    campaign: Option<CampaignLimits>,
) -> usize {
    let mut tasks = Vec::new();
    for i in 0..n {
        let caps = Arc::clone(&caps[i % 2]);
        let campaign = campaign.clone();
        tasks.push(tokio::spawn(async move {
            let mut taken = Taken::default();
            caps.admit(now, owner, campaign.as_ref(), &mut taken)
                .await
                .expect("the check runs")
                .is_none()
        }));
    }
    let mut admitted = 0;
    for task in tasks {
        admitted += usize::from(task.await.expect("task"));
    }
    admitted
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn a_closed_window_waits_for_its_opening_and_takes_nothing(pool: PgPool) {
    let caps = Caps::new(pool.clone());
    // A Monday 07:00 in Berlin (06:00 UTC); the window opens at 09:00 local.
    let now = datetime!(2026-12-07 06:00 UTC);
    let campaign = CampaignLimits {
        id: Uuid::now_v7(),
        window: Some(window("Europe/Berlin", &["mon", "tue"], "09:00", "17:00")),
        daily_cap: Some(1),
    };
    let mut taken = Taken::default();
    let wait = caps
        .admit(now, None, Some(&campaign), &mut taken)
        .await
        .expect("runs")
        .expect("it waits");
    assert_eq!(
        OffsetDateTime::from(wait.until),
        datetime!(2026-12-07 08:00 UTC)
    );
    assert!(wait.reason.contains("send window"), "{}", wait.reason);
    let counted: i64 = sqlx::query_scalar("SELECT count(*) FROM send_counts")
        .fetch_one(&pool)
        .await
        .expect("count");
    assert_eq!(
        counted, 0,
        "a message outside its window takes no admission"
    );

    // Open: admitted once; the cap of 1 then waits for the next local day's opening.
    let open = datetime!(2026-12-07 09:30 UTC);
    assert!(
        caps.admit(open, None, Some(&campaign), &mut taken)
            .await
            .expect("runs")
            .is_none()
    );
    let wait = caps
        .admit(open, None, Some(&campaign), &mut Taken::default())
        .await
        .expect("runs")
        .expect("over the cap");
    assert_eq!(
        OffsetDateTime::from(wait.until),
        datetime!(2026-12-08 08:00 UTC),
        "Tuesday 09:00 in Berlin"
    );
    assert!(wait.reason.contains("daily cap of 1"), "{}", wait.reason);
    // Given back (the message was not sent): room for one more.
    caps.give_back(taken).await;
    assert!(
        caps.admit(open, None, Some(&campaign), &mut Taken::default())
            .await
            .expect("runs")
            .is_none()
    );
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn a_campaign_cap_holds_across_two_workers(pool: PgPool) {
    let caps = [
        Arc::new(Caps::new(pool.clone())),
        Arc::new(Caps::new(pool.clone())),
    ];
    let campaign = CampaignLimits {
        id: Uuid::now_v7(),
        window: None,
        daily_cap: Some(25),
    };
    let now = OffsetDateTime::now_utc();
    assert_eq!(
        admit_many(&caps, 60, now, None, Some(campaign.clone())).await,
        25
    );
    // The next day counts afresh.
    let tomorrow = now + time::Duration::days(1);
    assert_eq!(
        admit_many(&caps, 30, tomorrow, None, Some(campaign)).await,
        25
    );
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn an_accounts_warmup_caps_each_day_and_its_campaign_admission_goes_back(pool: PgPool) {
    let owner = owner(&pool).await;
    let warmup =
        Warmup::new(time::macros::date!(2026 - 12 - 07), 10, 50, Some(1000)).expect("warm-up");
    sending_limits::put(&pool, owner, "America/New_York", Some(100), Some(&warmup))
        .await
        .expect("limits");
    let caps = [
        Arc::new(Caps::new(pool.clone())),
        Arc::new(Caps::new(pool.clone())),
    ];
    // Day 0 in New York: 10; day 1: 15; day 2: 23 (rounded up).
    let day0 = datetime!(2026-12-07 15:00 UTC);
    assert_eq!(admit_many(&caps, 40, day0, Some(owner), None).await, 10);
    let day1 = datetime!(2026-12-08 15:00 UTC);
    assert_eq!(admit_many(&caps, 40, day1, Some(owner), None).await, 15);

    // Over the account's cap, a campaign message's own admission is given back.
    let campaign = CampaignLimits {
        id: Uuid::now_v7(),
        window: None,
        daily_cap: Some(1000),
    };
    let wait = caps[0]
        .admit(day1, Some(owner), Some(&campaign), &mut Taken::default())
        .await
        .expect("runs")
        .expect("the account's cap is reached");
    assert!(wait.reason.contains("warm-up"), "{}", wait.reason);
    assert_eq!(
        OffsetDateTime::from(wait.until),
        datetime!(2026-12-09 05:00 UTC),
        "midnight in New York"
    );
    let counted: Option<i32> =
        sqlx::query_scalar("SELECT count FROM send_counts WHERE scope = 'campaign:' || $1::text")
            .bind(campaign.id)
            .fetch_optional(&pool)
            .await
            .expect("count");
    assert_eq!(
        counted.unwrap_or(0),
        0,
        "the campaign's admission went back"
    );
}
