//! When a campaign may send and how much an account may send per day: a [`SendWindow`]
//! (days and hours in an IANA time zone) and a [`Warmup`] (a daily cap that grows day by
//! day). Pure logic; the per-day counts live in `db::send_caps`.
//!
//! Time zones come from `chrono-tz` (tzdb compiled into the binary, the crate
//! `jobs::schedule` already uses, so a zone a schedule accepts a window accepts too);
//! `time::OffsetDateTime` goes in and comes out, `chrono` stays inside this module.
//!
//! Daylight-saving time: a local time `L` of a day stands for **the first instant at
//! which the zone's wall clock reads `L` or later**. So a time the clocks skip (a gap)
//! is the instant they jump forward (a window from 02:30 on the day Berlin jumps from
//! 02:00 to 03:00 opens at 03:00), and a time they show twice (an overlap) is its
//! first occurrence. A day's window is the instants from its start to its end so
//! defined: it stays open through a repeated hour even where the wall clock goes back
//! before `start`, and a window both of whose ends the clocks skip is empty that day.

use std::fmt;

use chrono::{Datelike as _, LocalResult, NaiveDate, NaiveDateTime, NaiveTime, TimeZone as _};
pub use chrono_tz::Tz;
use serde::{Deserialize, Serialize};
use time::{Date, OffsetDateTime, Weekday};

use crate::problem::FieldError;

/// The weekdays' names in a window's `days`, Monday first.
const DAY_NAMES: [(&str, Weekday); 7] = [
    ("mon", Weekday::Monday),
    ("tue", Weekday::Tuesday),
    ("wed", Weekday::Wednesday),
    ("thu", Weekday::Thursday),
    ("fri", Weekday::Friday),
    ("sat", Weekday::Saturday),
    ("sun", Weekday::Sunday),
];

/// How many days [`SendWindow::opens_at`] looks ahead: the day before `now`'s (whose
/// window may end after midnight's transition), then two weeks, so a window day the
/// clocks skip whole (Samoa skipped Friday 2011-12-30) is made up a week later.
const SEARCH_DAYS: usize = 16;

/// A set of weekdays.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Weekdays(u8);

impl Weekdays {
    pub fn with(self, day: Weekday) -> Weekdays {
        Weekdays(self.0 | 1 << day.number_days_from_monday())
    }

    pub fn contains(self, day: Weekday) -> bool {
        self.0 & 1 << day.number_days_from_monday() != 0
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The days' names (`mon` … `sun`), Monday first.
    pub fn names(self) -> impl Iterator<Item = &'static str> {
        DAY_NAMES
            .into_iter()
            .filter(move |(_, day)| self.contains(*day))
            .map(|(name, _)| name)
    }
}

impl fmt::Debug for Weekdays {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.names()).finish()
    }
}

/// A time of day to the minute, `00:00` to `24:00` (the end of the day, for a window's
/// end only).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TimeOfDay(u16);

impl TimeOfDay {
    pub const MIDNIGHT: TimeOfDay = TimeOfDay(0);
    pub const END_OF_DAY: TimeOfDay = TimeOfDay(24 * 60);

    /// `hour:minute`, or `None` unless it is 00:00 to 23:59 or 24:00.
    pub fn new(hour: u8, minute: u8) -> Option<TimeOfDay> {
        let valid = (hour < 24 && minute < 60) || (hour == 24 && minute == 0);
        valid.then(|| TimeOfDay(u16::from(hour) * 60 + u16::from(minute)))
    }

    /// Exactly `HH:MM`.
    fn parse(raw: &str) -> Option<TimeOfDay> {
        let two_digits = |s: &str| {
            (s.len() == 2 && s.bytes().all(|b| b.is_ascii_digit()))
                .then(|| s.parse::<u8>().ok())
                .flatten()
        };
        let (hour, minute) = raw.split_once(':')?;
        TimeOfDay::new(two_digits(hour)?, two_digits(minute)?)
    }

    pub fn hour(self) -> u8 {
        u8::try_from(self.0 / 60).unwrap_or(24)
    }

    pub fn minute(self) -> u8 {
        u8::try_from(self.0 % 60).unwrap_or(0)
    }

    /// The local date-time on `day` (24:00 is the next day's midnight).
    fn on(self, day: NaiveDate) -> Option<NaiveDateTime> {
        if self == TimeOfDay::END_OF_DAY {
            return day.succ_opt()?.and_hms_opt(0, 0, 0);
        }
        day.and_hms_opt(u32::from(self.hour()), u32::from(self.minute()), 0)
    }
}

impl fmt::Display for TimeOfDay {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:02}:{:02}", self.hour(), self.minute())
    }
}

/// A day of a send window, as written (for the OpenAPI document).
#[derive(utoipa::ToSchema)]
#[schema(rename_all = "lowercase")]
#[allow(dead_code)]
pub enum DayName {
    Mon,
    Tue,
    Wed,
    Thu,
    Fri,
    Sat,
    Sun,
}

/// A send window as a request carries it, before [`SendWindow::parse`]:
/// `{"time_zone":"Europe/Berlin","days":["mon","tue"],"start":"09:00","end":"17:30"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SendWindowFields {
    /// An IANA time zone, e.g. `Europe/Berlin` or `UTC`.
    #[schema(examples("Europe/Berlin"))]
    pub time_zone: String,
    /// The days it opens, of `mon`, `tue`, `wed`, `thu`, `fri`, `sat`, `sun` (any
    /// case; repeats are ignored).
    #[schema(min_items = 1, value_type = Vec<DayName>)]
    pub days: Vec<String>,
    /// Local time it opens each day, `HH:MM`.
    #[schema(pattern = "^([01][0-9]|2[0-3]):[0-5][0-9]$", examples("09:00"))]
    pub start: String,
    /// Local time it closes, `HH:MM` after `start`, or `24:00` (the end of the day).
    #[schema(pattern = "^(([01][0-9]|2[0-3]):[0-5][0-9]|24:00)$", examples("17:30"))]
    pub end: String,
}

/// The hours a campaign may send: on `days`, from `start` to `end` in `time_zone`. It
/// never crosses midnight (`end` is after `start`, `24:00` at the latest).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "SendWindowFields", into = "SendWindowFields")]
pub struct SendWindow {
    time_zone: Tz,
    days: Weekdays,
    start: TimeOfDay,
    end: TimeOfDay,
}

impl SendWindow {
    /// The window `fields` describe, or every invalid field (`send_window.time_zone`,
    /// `send_window.days[2]`, `send_window.end`, …).
    pub fn parse(fields: SendWindowFields) -> Result<SendWindow, Vec<FieldError>> {
        let mut errors = Vec::new();
        let time_zone = fields.time_zone.parse::<Tz>().ok();
        if time_zone.is_none() {
            errors.push(FieldError::new(
                "send_window.time_zone",
                format!(
                    "{} is not an IANA time zone (such as Europe/Berlin or UTC)",
                    quoted(&fields.time_zone)
                ),
            ));
        }
        let mut days = Weekdays::default();
        for (i, raw) in fields.days.iter().enumerate() {
            match DAY_NAMES
                .iter()
                .find(|(name, _)| name.eq_ignore_ascii_case(raw))
            {
                Some((_, day)) => days = days.with(*day),
                None => errors.push(FieldError::new(
                    format!("send_window.days[{i}]"),
                    format!(
                        "{} is not a day: use mon, tue, wed, thu, fri, sat or sun",
                        quoted(raw)
                    ),
                )),
            }
        }
        if fields.days.is_empty() {
            errors.push(FieldError::new(
                "send_window.days",
                "the window must open on at least one day",
            ));
        }
        let start = TimeOfDay::parse(&fields.start).filter(|t| *t != TimeOfDay::END_OF_DAY);
        if start.is_none() {
            errors.push(FieldError::new(
                "send_window.start",
                format!(
                    "{} is not a start time: use HH:MM, 00:00 to 23:59",
                    quoted(&fields.start)
                ),
            ));
        }
        let end = TimeOfDay::parse(&fields.end);
        match (start, end) {
            (_, None) => errors.push(FieldError::new(
                "send_window.end",
                format!(
                    "{} is not an end time: use HH:MM, 00:01 to 24:00",
                    quoted(&fields.end)
                ),
            )),
            (Some(start), Some(end)) if end <= start => errors.push(FieldError::new(
                "send_window.end",
                format!(
                    "the window must end after it starts ({end} is not after {start}); \
                     it cannot cross midnight: 24:00 is the end of the day"
                ),
            )),
            _ => {}
        }
        match (time_zone, start, end) {
            (Some(time_zone), Some(start), Some(end)) if errors.is_empty() => Ok(SendWindow {
                time_zone,
                days,
                start,
                end,
            }),
            _ => Err(errors),
        }
    }

    pub fn time_zone(&self) -> Tz {
        self.time_zone
    }

    pub fn days(&self) -> Weekdays {
        self.days
    }

    pub fn start(&self) -> TimeOfDay {
        self.start
    }

    pub fn end(&self) -> TimeOfDay {
        self.end
    }

    /// `now` if the window is open then, else the next instant it opens (in UTC).
    /// `now` itself also at the very edges of `time`'s range (years ±9999), where no
    /// later day can be computed.
    pub fn opens_at(&self, now: OffsetDateTime) -> OffsetDateTime {
        self.next_opening(now).unwrap_or(now)
    }

    /// Whether the window is open at `now`.
    pub fn is_open(&self, now: OffsetDateTime) -> bool {
        self.next_opening(now) == Some(now)
    }

    /// The local calendar day of `now` in the window's zone: the day a daily cap counts
    /// `now`'s messages on.
    pub fn day_of(&self, now: OffsetDateTime) -> Date {
        local_date(self.time_zone, now)
    }

    /// When the local day after [`Self::day_of`]`(now)` begins (its midnight, or the
    /// first instant after it where the clocks skip midnight), in UTC; after `now`
    /// except at the very edge of `time`'s range, where it is `now`.
    pub fn next_day_start(&self, now: OffsetDateTime) -> OffsetDateTime {
        next_day_in(self.time_zone, now)
    }

    fn next_opening(&self, now: OffsetDateTime) -> Option<OffsetDateTime> {
        let today = to_naive_date(local_date(self.time_zone, now));
        let mut day = today.pred_opt().unwrap_or(today);
        for _ in 0..SEARCH_DAYS {
            if self.days.contains(to_date(day).weekday()) {
                let open = first_instant(self.time_zone, self.start.on(day)?)?;
                let close = first_instant(self.time_zone, self.end.on(day)?)?;
                if open < close && now < close {
                    return Some(open.max(now));
                }
            }
            day = day.succ_opt()?;
        }
        None
    }
}

impl TryFrom<SendWindowFields> for SendWindow {
    type Error = String;

    fn try_from(fields: SendWindowFields) -> Result<SendWindow, String> {
        SendWindow::parse(fields).map_err(|errors| joined(&errors))
    }
}

impl From<SendWindow> for SendWindowFields {
    fn from(window: SendWindow) -> SendWindowFields {
        SendWindowFields {
            time_zone: window.time_zone.name().to_owned(),
            days: window.days.names().map(str::to_owned).collect(),
            start: window.start.to_string(),
            end: window.end.to_string(),
        }
    }
}

/// A warm-up as a request carries it, before [`Warmup::parse`]:
/// `{"starts_on":"2026-12-07","first_day":50,"growth_percent":20,"max":5000}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct WarmupFields {
    /// The warm-up's day 0, `YYYY-MM-DD`.
    #[schema(format = Date, examples("2026-12-07"))]
    pub starts_on: String,
    /// The cap on day 0, at least 1.
    #[schema(minimum = 1, maximum = 4294967295_i64, examples(50))]
    pub first_day: i64,
    /// How much the cap grows each day, 1 to 1000 (percent).
    #[schema(minimum = 1, maximum = 1000, examples(50))]
    pub growth_percent: i64,
    /// The cap at which the warm-up ends, above `first_day`; none: it grows until the
    /// cap no longer fits 32 bits.
    #[schema(minimum = 2, maximum = 4294967295_i64, examples(20000))]
    pub max: Option<i64>,
}

/// A daily cap that grows day by day while a new account or domain builds its sending
/// reputation: `first_day` messages on `starts_on` (day 0), then each day the previous
/// day's cap × (1 + `growth_percent`/100), rounded up, until it reaches `max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "WarmupFields", into = "WarmupFields")]
pub struct Warmup {
    starts_on: Date,
    first_day: u32,
    growth_percent: u32,
    max: Option<u32>,
}

impl Warmup {
    /// A warm-up, or every invalid field (`warmup.first_day`, …): `first_day` at least
    /// 1, `growth_percent` 1 to 1000, `max` above `first_day`.
    pub fn new(
        starts_on: Date,
        first_day: u32,
        growth_percent: u32,
        max: Option<u32>,
    ) -> Result<Warmup, Vec<FieldError>> {
        Warmup::checked(
            Some(starts_on),
            i64::from(first_day),
            i64::from(growth_percent),
            max.map(i64::from),
        )
    }

    /// The warm-up `fields` describe, or every invalid field.
    pub fn parse(fields: WarmupFields) -> Result<Warmup, Vec<FieldError>> {
        Warmup::checked(
            parse_date(&fields.starts_on),
            fields.first_day,
            fields.growth_percent,
            fields.max,
        )
    }

    fn checked(
        starts_on: Option<Date>,
        first_day: i64,
        growth_percent: i64,
        max: Option<i64>,
    ) -> Result<Warmup, Vec<FieldError>> {
        let mut errors = Vec::new();
        if starts_on.is_none() {
            errors.push(FieldError::new(
                "warmup.starts_on",
                "not a date: use YYYY-MM-DD",
            ));
        }
        let first = u32::try_from(first_day).ok().filter(|n| *n >= 1);
        if first.is_none() {
            errors.push(FieldError::new(
                "warmup.first_day",
                format!("must be 1 to {}", u32::MAX),
            ));
        }
        let growth = u32::try_from(growth_percent)
            .ok()
            .filter(|n| (1..=1000).contains(n));
        if growth.is_none() {
            errors.push(FieldError::new(
                "warmup.growth_percent",
                "must be 1 to 1000 (percent a day)",
            ));
        }
        let max = match max.map(u32::try_from) {
            None => None,
            Some(Ok(max)) if first.is_none_or(|first| max > first) => Some(Some(max)),
            Some(_) => {
                errors.push(FieldError::new(
                    "warmup.max",
                    format!("must be above first_day and at most {}", u32::MAX),
                ));
                Some(None)
            }
        };
        match (starts_on, first, growth, max) {
            (Some(starts_on), Some(first_day), Some(growth_percent), max) if errors.is_empty() => {
                Ok(Warmup {
                    starts_on,
                    first_day,
                    growth_percent,
                    max: max.flatten(),
                })
            }
            _ => Err(errors),
        }
    }

    pub fn starts_on(&self) -> Date {
        self.starts_on
    }

    pub fn first_day(&self) -> u32 {
        self.first_day
    }

    pub fn growth_percent(&self) -> u32 {
        self.growth_percent
    }

    pub fn max(&self) -> Option<u32> {
        self.max
    }

    /// The warm-up's cap on `day`; `None` once the grown cap reaches `max` (or, without
    /// one, no longer fits a `u32`): the warm-up is over and limits nothing, only the
    /// account's own daily cap applies. Days before `starts_on` are day 0.
    pub fn cap_on(&self, day: Date) -> Option<u32> {
        let days = (day - self.starts_on).whole_days().max(0);
        let limit = self.max.map_or(u64::from(u32::MAX), u64::from);
        let factor = 100 + u64::from(self.growth_percent);
        let mut cap = u64::from(self.first_day);
        // Each day adds at least 1 (and at least 1%), so the cap reaches the limit in
        // under 2,100 days whatever `days` is: the loop is short, and cap × factor
        // stays far inside u64.
        for _ in 0..days {
            if cap >= limit {
                break;
            }
            cap = (cap * factor).div_ceil(100);
        }
        (cap < limit).then(|| u32::try_from(cap).ok()).flatten()
    }
}

impl TryFrom<WarmupFields> for Warmup {
    type Error = String;

    fn try_from(fields: WarmupFields) -> Result<Warmup, String> {
        Warmup::parse(fields).map_err(|errors| joined(&errors))
    }
}

impl From<Warmup> for WarmupFields {
    fn from(warmup: Warmup) -> WarmupFields {
        let date = warmup.starts_on;
        WarmupFields {
            starts_on: format!(
                "{:04}-{:02}-{:02}",
                date.year(),
                u8::from(date.month()),
                date.day()
            ),
            first_day: i64::from(warmup.first_day),
            growth_percent: i64::from(warmup.growth_percent),
            max: warmup.max.map(i64::from),
        }
    }
}

/// Exactly `YYYY-MM-DD`.
fn parse_date(raw: &str) -> Option<Date> {
    let mut parts = raw.split('-');
    let mut number = |len: usize| {
        parts
            .next()
            .filter(|p| p.len() == len && p.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|p| p.parse::<i32>().ok())
    };
    let (year, month, day) = (number(4)?, number(2)?, number(2)?);
    if parts.next().is_some() {
        return None;
    }
    let month = time::Month::try_from(u8::try_from(month).ok()?).ok()?;
    Date::from_calendar_date(year, month, u8::try_from(day).ok()?).ok()
}

/// A client's value in a message, cut short: the message must not grow with the input.
fn quoted(raw: &str) -> String {
    const MAX_CHARS: usize = 40;
    if raw.chars().count() <= MAX_CHARS {
        return format!("`{raw}`");
    }
    let cut: String = raw.chars().take(MAX_CHARS).collect();
    format!("`{cut}…`")
}

fn joined(errors: &[FieldError]) -> String {
    let each: Vec<String> = errors
        .iter()
        .map(|e| format!("{}: {}", e.field, e.message))
        .collect();
    each.join("; ")
}

/// The first instant at which the wall clock in `zone` reads `local` or later (see the
/// module's doc), in UTC; `None` outside `time`'s range.
fn first_instant(zone: Tz, local: NaiveDateTime) -> Option<OffsetDateTime> {
    let seconds = match zone.from_local_datetime(&local) {
        LocalResult::Single(at) => at.timestamp(),
        LocalResult::Ambiguous(first, second) => first.timestamp().min(second.timestamp()),
        LocalResult::None => gap_end(zone, local)?,
    };
    OffsetDateTime::from_unix_timestamp(seconds).ok()
}

/// The instant (Unix seconds) the clocks jump forward over `local`, a time they skip.
/// No zone's offset has reached ±26 hours, so the wall clock reads before `local` at
/// `lo` and after it at `hi`; it is searched to the second between them (transitions
/// fall on whole seconds).
fn gap_end(zone: Tz, local: NaiveDateTime) -> Option<i64> {
    const SPAN: i64 = 26 * 3600;
    let wall = |seconds: i64| {
        chrono::DateTime::from_timestamp(seconds, 0).map(|at| at.with_timezone(&zone).naive_local())
    };
    let around = local.and_utc().timestamp();
    let (mut lo, mut hi) = (around - SPAN, around + SPAN);
    while hi - lo > 1 {
        let mid = lo + (hi - lo) / 2;
        if wall(mid)? >= local {
            hi = mid;
        } else {
            lo = mid;
        }
    }
    Some(hi)
}

/// An account's own sending limits: a daily cap and a warm-up, counted per local day
/// of `zone`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountLimits {
    pub zone: Tz,
    pub daily_cap: Option<u32>,
    pub warmup: Option<Warmup>,
}

impl AccountLimits {
    /// The messages the account may send on `day`: the smaller of its daily cap and
    /// the warm-up's cap of that day; `None`: no limit.
    pub fn cap_on(&self, day: Date) -> Option<u32> {
        let warmup = self.warmup.as_ref().and_then(|w| w.cap_on(day));
        match (self.daily_cap, warmup) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

/// When the local day in `zone` after `now`'s begins (its midnight, or the first
/// instant after it where the clocks skip midnight), in UTC; after `now` except at the
/// very edge of `time`'s range, where it is `now`. What a daily cap counted in `zone`
/// waits for.
pub fn next_day_in(zone: Tz, now: OffsetDateTime) -> OffsetDateTime {
    let mut day = to_naive_date(local_date(zone, now));
    // Only a zone whose clocks went back across midnight could show the next day's
    // midnight before `now`; the day after it then begins later.
    for _ in 0..2 {
        let Some(next) = day.succ_opt() else { break };
        day = next;
        if let Some(start) = first_instant(zone, day.and_time(NaiveTime::MIN))
            && start > now
        {
            return start;
        }
    }
    now
}

/// `now`'s local date in `zone`: the day a daily cap counted in `zone` counts `now`'s
/// messages on.
pub fn day_in(zone: Tz, now: OffsetDateTime) -> Date {
    local_date(zone, now)
}

/// `now`'s local date in `zone` (clamped to `time`'s range at its edges).
fn local_date(zone: Tz, now: OffsetDateTime) -> Date {
    let Some(utc) = chrono::DateTime::from_timestamp(now.unix_timestamp(), now.nanosecond()) else {
        return now.date();
    };
    to_date(utc.with_timezone(&zone).date_naive())
}

fn to_naive_date(date: Date) -> NaiveDate {
    NaiveDate::from_yo_opt(date.year(), u32::from(date.ordinal())).unwrap_or(NaiveDate::MIN)
}

fn to_date(date: NaiveDate) -> Date {
    let ordinal = u16::try_from(date.ordinal()).unwrap_or(1);
    Date::from_ordinal_date(date.year(), ordinal).unwrap_or(if date.year() < 0 {
        Date::MIN
    } else {
        Date::MAX
    })
}

#[cfg(test)]
#[path = "window_tests.rs"]
mod tests;
