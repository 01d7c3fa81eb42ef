//! Tests of `mail::window`: windows and warm-ups across DST changes, and properties.
use chrono::Timelike as _;
use proptest::prelude::*;
use time::format_description::well_known::Rfc3339;

use super::*;

fn fields(zone: &str, days: &[&str], start: &str, end: &str) -> SendWindowFields {
    SendWindowFields {
        time_zone: zone.to_owned(),
        days: days.iter().map(|d| (*d).to_owned()).collect(),
        start: start.to_owned(),
        end: end.to_owned(),
    }
}

fn window(zone: &str, days: &[&str], start: &str, end: &str) -> SendWindow {
    SendWindow::parse(fields(zone, days, start, end)).expect("a valid window")
}

const EVERY_DAY: &[&str] = &["mon", "tue", "wed", "thu", "fri", "sat", "sun"];

fn at(rfc3339: &str) -> OffsetDateTime {
    OffsetDateTime::parse(rfc3339, &Rfc3339).expect("an RFC 3339 timestamp")
}

fn date(year: i32, month: u8, day: u8) -> Date {
    let month = time::Month::try_from(month).expect("a month");
    Date::from_calendar_date(year, month, day).expect("a date")
}

fn refused_fields(fields: SendWindowFields) -> Vec<String> {
    let errors = SendWindow::parse(fields).expect_err("refused");
    errors.into_iter().map(|e| e.field).collect()
}

#[test]
fn the_json_shape_reads_and_writes_back_in_canonical_form() {
    let raw = r#"{"time_zone":"Europe/Berlin","days":["FRI","mon","tue","mon"],"start":"09:00","end":"24:00"}"#;
    let window: SendWindow = serde_json::from_str(raw).expect("a window");
    assert_eq!(window.time_zone(), chrono_tz::Europe::Berlin);
    assert!(window.days().contains(Weekday::Friday));
    assert!(!window.days().contains(Weekday::Sunday));
    assert_eq!(window.end(), TimeOfDay::END_OF_DAY);
    assert_eq!(
        serde_json::to_string(&window).expect("json"),
        r#"{"time_zone":"Europe/Berlin","days":["mon","tue","fri"],"start":"09:00","end":"24:00"}"#
    );
}

#[test]
fn every_invalid_field_is_named() {
    let errors = SendWindow::parse(fields("Mars/Olympus", &["mon", "funday"], "9am", "25:00"))
        .expect_err("refused");
    let named: Vec<(&str, &str)> = errors
        .iter()
        .map(|e| (e.field.as_str(), e.message.as_str()))
        .collect();
    assert_eq!(named.len(), 4, "{named:?}");
    assert!(named[0].0 == "send_window.time_zone" && named[0].1.contains("`Mars/Olympus`"));
    assert!(named[1].0 == "send_window.days[1]" && named[1].1.contains("`funday`"));
    assert!(named[2].0 == "send_window.start" && named[2].1.contains("HH:MM"));
    assert!(named[3].0 == "send_window.end" && named[3].1.contains("24:00"));
}

#[test]
fn a_window_with_no_day_is_refused() {
    assert_eq!(
        refused_fields(fields("UTC", &[], "09:00", "17:00")),
        ["send_window.days"]
    );
}

#[test]
fn a_window_that_does_not_end_after_it_starts_is_refused() {
    for (start, end) in [("09:00", "09:00"), ("17:00", "09:00"), ("22:00", "06:00")] {
        let errors = SendWindow::parse(fields("UTC", &["mon"], start, end)).expect_err("refused");
        assert_eq!(errors.len(), 1, "{start}-{end}");
        assert_eq!(errors[0].field, "send_window.end");
        assert!(errors[0].message.contains("must end after it starts"));
    }
    // 24:00 is an end, never a start.
    assert_eq!(
        refused_fields(fields("UTC", &["mon"], "24:00", "24:00")),
        ["send_window.start"]
    );
}

#[test]
fn times_are_exactly_hh_mm() {
    for bad in [
        "9:00",
        "09:60",
        "24:01",
        "0900",
        "+9:00",
        "09:00:00",
        "",
        "٠٩:٠٠",
    ] {
        assert_eq!(
            refused_fields(fields("UTC", &["mon"], bad, "24:00")),
            ["send_window.start"],
            "{bad:?}"
        );
    }
    assert_eq!(
        window("UTC", &["mon"], "00:00", "00:01").end().to_string(),
        "00:01"
    );
}

#[test]
fn a_long_invalid_value_is_cut_short_in_the_message() {
    let zone = "x".repeat(10_000);
    let errors = SendWindow::parse(fields(&zone, &["mon"], "09:00", "17:00")).expect_err("refused");
    assert!(errors[0].message.len() < 200, "{}", errors[0].message);
}

#[test]
fn an_invalid_window_does_not_deserialize() {
    let raw = r#"{"time_zone":"UTC","days":[],"start":"09:00","end":"09:00"}"#;
    let err = serde_json::from_str::<SendWindow>(raw).expect_err("refused");
    let message = err.to_string();
    assert!(message.contains("send_window.days") && message.contains("send_window.end"));
}

#[test]
fn inside_the_window_it_is_open_now() {
    let office = window(
        "UTC",
        &["mon", "tue", "wed", "thu", "fri"],
        "09:00",
        "17:30",
    );
    let now = at("2026-12-07T12:34:56.789Z"); // a Monday
    assert_eq!(office.opens_at(now), now);
    assert!(office.is_open(now));
    assert!(office.is_open(at("2026-12-07T09:00:00Z")));
    assert!(!office.is_open(at("2026-12-07T17:30:00Z")));
}

#[test]
fn before_the_hours_it_opens_at_the_start_and_after_them_the_next_window_day() {
    let office = window(
        "UTC",
        &["mon", "tue", "wed", "thu", "fri"],
        "09:00",
        "17:30",
    );
    assert_eq!(
        office.opens_at(at("2026-12-07T06:00:00Z")),
        at("2026-12-07T09:00:00Z")
    );
    // Friday evening: Monday morning.
    assert_eq!(
        office.opens_at(at("2026-12-11T17:30:00Z")),
        at("2026-12-14T09:00:00Z")
    );
}

#[test]
fn a_window_to_24_00_is_open_until_midnight() {
    let evenings = window("Europe/Berlin", &["sat"], "20:00", "24:00");
    // Saturday 23:59:59 Berlin (CET) is open; Sunday 00:00 is not.
    assert!(evenings.is_open(at("2026-12-12T22:59:59Z")));
    assert_eq!(
        evenings.opens_at(at("2026-12-12T23:00:00Z")),
        at("2026-12-19T19:00:00Z")
    );
}

#[test]
fn the_hours_are_local_on_both_sides_of_berlin_spring_forward() {
    // 2026-03-29: 02:00 CET becomes 03:00 CEST (01:00 UTC).
    let office = window("Europe/Berlin", EVERY_DAY, "09:00", "17:00");
    assert_eq!(
        office.opens_at(at("2026-03-28T00:00:00Z")),
        at("2026-03-28T08:00:00Z")
    );
    assert_eq!(
        office.opens_at(at("2026-03-28T20:00:00Z")),
        at("2026-03-29T07:00:00Z")
    );
}

#[test]
fn a_start_the_clocks_skip_opens_when_they_jump_forward() {
    let night = window("Europe/Berlin", EVERY_DAY, "02:30", "04:00");
    // 01:45 CET: the window opens at 03:00 CEST, the instant the clocks jump.
    assert_eq!(
        night.opens_at(at("2026-03-29T00:45:00Z")),
        at("2026-03-29T01:00:00Z")
    );
    assert!(!night.is_open(at("2026-03-29T00:59:59Z")));
    assert!(night.is_open(at("2026-03-29T01:59:59Z")));
    assert!(!night.is_open(at("2026-03-29T02:00:00Z")));
}

#[test]
fn a_window_the_clocks_skip_whole_is_closed_that_day() {
    let skipped = window("Europe/Berlin", EVERY_DAY, "02:00", "02:45");
    assert_eq!(
        skipped.opens_at(at("2026-03-28T23:30:00Z")),
        at("2026-03-30T00:00:00Z")
    );
    let new_york = window("America/New_York", &["sun", "mon"], "02:00", "03:00");
    // 2026-03-08: 02:00 EST becomes 03:00 EDT (07:00 UTC); Monday 02:00 EDT.
    assert_eq!(
        new_york.opens_at(at("2026-03-08T06:00:00Z")),
        at("2026-03-09T06:00:00Z")
    );
}

#[test]
fn a_start_shown_twice_opens_at_its_first_occurrence_and_stays_open_through_the_repeat() {
    // 2026-10-25: 03:00 CEST becomes 02:00 CET (01:00 UTC).
    let night = window("Europe/Berlin", EVERY_DAY, "02:30", "17:00");
    assert_eq!(
        night.opens_at(at("2026-10-25T00:00:00Z")),
        at("2026-10-25T00:30:00Z")
    );
    // 02:10 CET, after the clocks went back before the start: still open.
    assert!(night.is_open(at("2026-10-25T01:10:00Z")));
    assert!(!night.is_open(at("2026-10-25T16:00:00Z")));
}

#[test]
fn an_end_shown_twice_closes_at_its_first_occurrence() {
    // 2026-11-01 in New York: 02:00 EDT becomes 01:00 EST (06:00 UTC).
    let short = window("America/New_York", EVERY_DAY, "01:30", "01:45");
    assert_eq!(
        short.opens_at(at("2026-11-01T05:00:00Z")),
        at("2026-11-01T05:30:00Z")
    );
    // 01:35 EST, the second 01:35: the window closed at the first 01:45.
    assert_eq!(
        short.opens_at(at("2026-11-01T06:35:00Z")),
        at("2026-11-02T06:30:00Z")
    );
}

#[test]
fn weekday_hours_across_new_york_spring_forward() {
    let office = window(
        "America/New_York",
        &["mon", "tue", "wed", "thu", "fri"],
        "09:00",
        "17:00",
    );
    // Friday 18:00 EST: Monday 09:00 EDT, 13:00 UTC (not 14:00).
    assert_eq!(
        office.opens_at(at("2026-03-06T23:00:00Z")),
        at("2026-03-09T13:00:00Z")
    );
}

#[test]
fn a_window_day_the_calendar_skips_is_made_up_a_week_later() {
    // Samoa skipped Friday 2011-12-30 (Thursday 24:00 -10 became Saturday +14).
    let fridays = window("Pacific/Apia", &["fri"], "09:00", "17:00");
    assert_eq!(
        fridays.opens_at(at("2011-12-29T12:00:00Z")),
        at("2012-01-05T19:00:00Z")
    );
}

#[test]
fn local_days_follow_the_zone_across_dst() {
    let new_york = window("America/New_York", EVERY_DAY, "09:00", "17:00");
    // Saturday 22:00 EST.
    let saturday_night = at("2026-03-08T03:00:00Z");
    assert_eq!(new_york.day_of(saturday_night), date(2026, 3, 7));
    let sunday = new_york.next_day_start(saturday_night);
    assert_eq!(sunday, at("2026-03-08T05:00:00Z"));
    assert_eq!(new_york.day_of(sunday), date(2026, 3, 8));
    // Sunday has 23 hours.
    assert_eq!(new_york.next_day_start(sunday), at("2026-03-09T04:00:00Z"));

    let berlin = window("Europe/Berlin", EVERY_DAY, "09:00", "17:00");
    assert_eq!(
        berlin.day_of(at("2026-10-24T22:30:00Z")),
        date(2026, 10, 25)
    );
    // Sunday 2026-10-25 has 25 hours.
    assert_eq!(
        berlin.next_day_start(at("2026-10-24T22:30:00Z")),
        at("2026-10-25T23:00:00Z")
    );
}

#[test]
fn a_day_whose_midnight_the_clocks_skip_starts_when_they_jump() {
    // Santiago, 2026-09-06: Sunday 00:00 -04 becomes 01:00 -03 (04:00 UTC).
    let santiago = window("America/Santiago", &["sun"], "00:00", "02:00");
    let saturday = at("2026-09-05T15:00:00Z");
    assert_eq!(
        santiago.next_day_start(saturday),
        at("2026-09-06T04:00:00Z")
    );
    assert_eq!(santiago.opens_at(saturday), at("2026-09-06T04:00:00Z"));
    assert_eq!(
        santiago.day_of(at("2026-09-06T04:00:00Z")),
        date(2026, 9, 6)
    );
    // 2026-04-05: Sunday 00:00 -03 becomes Saturday 23:00 -04; Saturday lasts 25 hours.
    let late = at("2026-04-05T03:30:00Z");
    assert_eq!(santiago.day_of(late), date(2026, 4, 4));
    assert_eq!(santiago.next_day_start(late), at("2026-04-05T04:00:00Z"));
}

const ZONES: [&str; 6] = [
    "UTC",
    "Europe/Berlin",
    "America/New_York",
    "America/Santiago",
    "Australia/Lord_Howe",
    "Asia/Kolkata",
];

fn windows() -> impl Strategy<Value = SendWindow> {
    (0..ZONES.len(), 1u8..=127, 0u16..1440, 1u16..=1440).prop_map(|(zone, days, start, length)| {
        SendWindow {
            time_zone: ZONES[zone].parse().expect("a zone"),
            days: Weekdays(days),
            start: TimeOfDay(start),
            end: TimeOfDay((start + length).min(24 * 60)),
        }
    })
}

/// 1970 to 2100 to the nanosecond, half of them within two days of a DST change
/// of one of `ZONES` in 2026.
fn instants() -> impl Strategy<Value = OffsetDateTime> {
    const CHANGES: [&str; 8] = [
        "2026-03-29T01:00:00Z",
        "2026-10-25T01:00:00Z",
        "2026-03-08T07:00:00Z",
        "2026-11-01T06:00:00Z",
        "2026-04-05T03:00:00Z",
        "2026-09-06T04:00:00Z",
        "2026-04-04T15:00:00Z",
        "2026-10-03T15:30:00Z",
    ];
    let anywhere = 0i64..4_102_444_800;
    let near_a_change = (0..CHANGES.len(), -172_800i64..172_800)
        .prop_map(|(change, offset)| at(CHANGES[change]).unix_timestamp() + offset);
    (prop_oneof![anywhere, near_a_change], 0u32..1_000_000_000).prop_map(|(seconds, nanos)| {
        OffsetDateTime::from_unix_timestamp(seconds).expect("in range")
            + time::Duration::nanoseconds(i64::from(nanos))
    })
}

proptest! {
    #[test]
    fn the_window_opens_now_or_later_at_an_instant_inside_it(
        window in windows(),
        now in instants(),
    ) {
        let opens = window.opens_at(now);
        prop_assert!(opens >= now);
        prop_assert!(window.is_open(opens));
        if opens > now {
            // It opens there: closed just before, and its wall clock is in the hours.
            prop_assert!(!window.is_open(opens - time::Duration::seconds(1)));
            let wall = chrono::DateTime::from_timestamp(opens.unix_timestamp(), 0)
                .expect("in range")
                .with_timezone(&window.time_zone)
                .naive_local();
            let minute = u16::try_from(wall.time().num_seconds_from_midnight() / 60)
                .expect("a minute");
            prop_assert!(window.days.contains(to_date(wall.date()).weekday()));
            prop_assert!(window.start.0 <= minute && minute < window.end.0);
        }
    }

    #[test]
    fn the_next_day_starts_after_now_on_the_next_local_day(
        window in windows(),
        now in instants(),
    ) {
        let next = window.next_day_start(now);
        prop_assert!(next > now);
        let today = window.day_of(now);
        prop_assert_eq!(window.day_of(next), today.next_day().expect("in range"));
        let just_before = (next - time::Duration::nanoseconds(1)).max(now);
        prop_assert_eq!(window.day_of(just_before), today);
    }

    #[test]
    fn parsing_never_panics_and_accepts_only_windows_that_end_after_they_start(
        zone in "UTC|Europe/Berlin|[A-Za-z/_]{0,20}",
        days in proptest::collection::vec("mon|Sat|[a-zA-Z]{0,4}", 0..9),
        start in "[0-2][0-9]:[0-6][0-9]|[0-9:]{0,6}",
        end in "[0-2][0-9]:[0-6][0-9]|[0-9:]{0,6}",
    ) {
        let days: Vec<&str> = days.iter().map(String::as_str).collect();
        if let Ok(window) = SendWindow::parse(fields(&zone, &days, &start, &end)) {
            prop_assert!(window.start < window.end && !window.days.is_empty());
            let fields = SendWindowFields::from(window);
            prop_assert_eq!(SendWindow::parse(fields), Ok(window));
        }
    }
}

fn warmup(first_day: u32, growth_percent: u32, max: Option<u32>) -> Warmup {
    Warmup::new(date(2026, 12, 7), first_day, growth_percent, max).expect("a valid warm-up")
}

#[test]
fn the_cap_grows_each_day_rounded_up() {
    let ramp = warmup(50, 20, None);
    let caps: Vec<Option<u32>> = (0..6)
        .map(|day| ramp.cap_on(date(2026, 12, 7) + time::Duration::days(day)))
        .collect();
    // 50, 60, 72, 86.4, 104.4, 126 (rounded up from 125.4).
    assert_eq!(
        caps,
        [Some(50), Some(60), Some(72), Some(87), Some(105), Some(126)]
    );
}

#[test]
fn days_before_the_start_are_day_zero() {
    assert_eq!(warmup(50, 20, None).cap_on(date(2020, 1, 1)), Some(50));
}

#[test]
fn the_warmup_ends_when_the_cap_reaches_max() {
    let ramp = warmup(10, 100, Some(80));
    let caps: Vec<Option<u32>> = (0..5)
        .map(|day| ramp.cap_on(date(2026, 12, 7) + time::Duration::days(day)))
        .collect();
    assert_eq!(caps, [Some(10), Some(20), Some(40), None, None]);
}

#[test]
fn without_max_the_warmup_ends_where_the_cap_no_longer_fits() {
    let ramp = warmup(1, 1, None);
    assert!(
        ramp.cap_on(date(2026, 12, 7) + time::Duration::days(1000))
            .is_some()
    );
    assert_eq!(ramp.cap_on(Date::MAX), None);
}

#[test]
fn invalid_warmups_name_each_field() {
    let refused = |fields: WarmupFields| -> Vec<String> {
        let errors = Warmup::parse(fields).expect_err("refused");
        errors.into_iter().map(|e| e.field).collect()
    };
    assert_eq!(
        refused(WarmupFields {
            starts_on: "2026-12-7".to_owned(),
            first_day: 0,
            growth_percent: 1001,
            max: Some(-1),
        }),
        [
            "warmup.starts_on",
            "warmup.first_day",
            "warmup.growth_percent",
            "warmup.max"
        ]
    );
    assert_eq!(
        refused(WarmupFields {
            starts_on: "2026-02-30".to_owned(),
            first_day: 100,
            growth_percent: 0,
            max: Some(100),
        }),
        ["warmup.starts_on", "warmup.growth_percent", "warmup.max"]
    );
    assert_eq!(
        Warmup::new(date(2026, 12, 7), 1, 1, Some(1)).map_err(|e| e[0].field.clone()),
        Err("warmup.max".to_owned())
    );
}

#[test]
fn a_warmup_reads_and_writes_its_json_shape() {
    let raw = r#"{"starts_on":"2026-12-07","first_day":50,"growth_percent":20,"max":5000}"#;
    let ramp: Warmup = serde_json::from_str(raw).expect("a warm-up");
    assert_eq!(ramp, warmup(50, 20, Some(5000)));
    assert_eq!(serde_json::to_string(&ramp).expect("json"), raw);
}

proptest! {
    #[test]
    fn caps_grow_until_the_warmup_ends_and_never_pass_max(
        first_day in 1u32..=u32::MAX - 1,
        growth_percent in 1u32..=1000,
        max in proptest::option::of(any::<u32>()),
        starts in -3_000_000i64..3_000_000,
        offset in 0i64..6_000_000,
    ) {
        let max = max.filter(|m| *m > first_day);
        let start = Date::from_julian_day(i32::try_from(2_000_000 + starts).expect("day"))
            .expect("in range");
        let ramp = Warmup::new(start, first_day, growth_percent, max).expect("valid");
        let day = start.checked_add(time::Duration::days(offset)).unwrap_or(Date::MAX);
        let cap = ramp.cap_on(day);
        let next = day.next_day().map(|next| ramp.cap_on(next));
        if let Some(cap) = cap {
            prop_assert!(cap >= first_day);
            prop_assert!(max.is_none_or(|max| cap < max));
            if let Some(Some(next)) = next {
                prop_assert!(next > cap);
            }
        } else if let Some(next) = next {
            prop_assert_eq!(next, None);
        }
    }
}
