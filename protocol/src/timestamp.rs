//! PostgreSQL timestamps as they travel in replication messages.
//!
//! On the wire a timestamp is a big-endian `i64` counting microseconds since
//! 2000-01-01 00:00:00 UTC (PostgreSQL's epoch). `PgTimestamp` keeps that
//! number untouched so decode → encode is exact, and converts to
//! `SystemTime` only when someone asks.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Seconds from the Unix epoch to PostgreSQL's epoch (2000-01-01 UTC).
const PG_EPOCH_UNIX_SECS: u64 = 946_684_800;

/// Microseconds since 2000-01-01 00:00:00 UTC, as PostgreSQL sends them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PgTimestamp(pub i64);

impl PgTimestamp {
    /// PostgreSQL's epoch itself.
    pub const EPOCH: PgTimestamp = PgTimestamp(0);

    /// This instant as a `SystemTime` (saturating at the platform's range).
    pub fn to_system_time(self) -> SystemTime {
        let pg_epoch = UNIX_EPOCH + Duration::from_secs(PG_EPOCH_UNIX_SECS);
        let magnitude = Duration::from_micros(self.0.unsigned_abs());
        let moved = if self.0 >= 0 {
            pg_epoch.checked_add(magnitude)
        } else {
            pg_epoch.checked_sub(magnitude)
        };
        moved.unwrap_or(pg_epoch)
    }

    /// The PostgreSQL timestamp of `time`, truncated to microseconds and
    /// saturating at the `i64` range.
    pub fn from_system_time(time: SystemTime) -> PgTimestamp {
        let pg_epoch = UNIX_EPOCH + Duration::from_secs(PG_EPOCH_UNIX_SECS);
        match time.duration_since(pg_epoch) {
            Ok(after) => PgTimestamp(i64::try_from(after.as_micros()).unwrap_or(i64::MAX)),
            Err(before) => {
                let micros = before.duration().as_micros();
                PgTimestamp(i64::try_from(micros).map_or(i64::MIN, |m| -m))
            }
        }
    }

    /// The current wall-clock time, for standby status updates.
    pub fn now() -> PgTimestamp {
        PgTimestamp::from_system_time(SystemTime::now())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epoch_is_year_2000() {
        let t = PgTimestamp::EPOCH.to_system_time();
        assert_eq!(t.duration_since(UNIX_EPOCH).unwrap().as_secs(), 946_684_800);
    }

    #[test]
    fn round_trips_through_system_time() {
        for micros in [0, 1, -1, 785_000_123_456, -946_684_800_000_000, 1 << 50] {
            let ts = PgTimestamp(micros);
            assert_eq!(PgTimestamp::from_system_time(ts.to_system_time()), ts);
        }
    }

    #[test]
    fn known_instant() {
        // 2024-01-01 00:00:00 UTC = Unix 1_704_067_200.
        let t = UNIX_EPOCH + Duration::from_secs(1_704_067_200);
        assert_eq!(
            PgTimestamp::from_system_time(t),
            PgTimestamp((1_704_067_200 - 946_684_800) * 1_000_000)
        );
    }

    #[test]
    fn now_is_after_2024() {
        assert!(PgTimestamp::now().0 > 757_382_400_000_000);
    }
}
