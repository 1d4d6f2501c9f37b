//! Wall-clock time as Unix seconds: the one place that turns `SystemTime` into the `i64` the
//! state file, events, credential expiry and the simulator's `X-TC-Timestamp` checks use.

use std::time::{SystemTime, UNIX_EPOCH};

/// Seconds since the Unix epoch, negative for a clock set before 1970. Saturates at the ends of
/// `i64` instead of wrapping or panicking: a badly set clock must not take the daemon down.
pub fn unix_now() -> i64 {
    unix_seconds(SystemTime::now())
}

/// [`unix_now`] for a given instant.
pub fn unix_seconds(time: SystemTime) -> i64 {
    match time.duration_since(UNIX_EPOCH) {
        Ok(after) => i64::try_from(after.as_secs()).unwrap_or(i64::MAX),
        Err(before) => i64::try_from(before.duration().as_secs()).map_or(i64::MIN, |s| -s),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn before_at_and_after_the_epoch() {
        assert_eq!(unix_seconds(UNIX_EPOCH), 0);
        assert_eq!(unix_seconds(UNIX_EPOCH + Duration::from_secs(90)), 90);
        assert_eq!(unix_seconds(UNIX_EPOCH - Duration::from_secs(90)), -90);
        // 2020-01-01 < now < 2200-01-01 on any sane test machine.
        assert!((1_577_836_800..7_258_118_400).contains(&unix_now()));
    }

    #[test]
    fn far_times_saturate() {
        if let Some(far) = UNIX_EPOCH.checked_add(Duration::from_secs(u64::MAX / 2)) {
            assert_eq!(unix_seconds(far), i64::MAX);
        }
        if let Some(far) = UNIX_EPOCH.checked_sub(Duration::from_secs(u64::MAX / 2)) {
            assert_eq!(unix_seconds(far), -i64::MAX);
        }
        if let Some(far) = UNIX_EPOCH.checked_sub(Duration::from_secs(u64::MAX)) {
            assert_eq!(unix_seconds(far), i64::MIN);
        }
    }
}
