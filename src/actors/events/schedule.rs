//! When a failed attempt is tried again: growing delays with jitter, until
//! the event is older than `webhooks.max_age_secs`.

use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Next {
    Retry(Duration),
    Fail,
}

/// After failed attempt number `attempt` (1 for the first) of an event
/// `age` old: the delay before the next one (`schedule[attempt - 1]`, the
/// last entry repeating, scaled by `1 + jitter`, jitter in -0.2..=0.2), or
/// `Fail` when that attempt would come after `max_age`.
pub fn after_failure(attempt: i32, age: Duration, schedule: &[u64], max_age: Duration, jitter: f64) -> Next {
    let Some(last) = schedule.len().checked_sub(1) else {
        return Next::Fail;
    };
    let i = usize::try_from(attempt.max(1) - 1).unwrap_or(0).min(last);
    let delay = Duration::from_secs_f64(schedule[i] as f64 * (1.0 + jitter.clamp(-0.2, 0.2)));
    if age + delay > max_age {
        Next::Fail
    } else {
        Next::Retry(delay)
    }
}

/// A random jitter for [`after_failure`].
pub fn jitter() -> f64 {
    rand::random::<f64>() * 0.4 - 0.2
}

#[cfg(test)]
mod tests {
    use super::*;

    const SCHEDULE: [u64; 6] = [5, 30, 120, 600, 3600, 21600];
    const DAYS_3: Duration = Duration::from_secs(259_200);

    #[test]
    fn delays_grow_then_repeat() {
        let delays: Vec<Next> = (1..=8)
            .map(|n| after_failure(n, Duration::ZERO, &SCHEDULE, DAYS_3, 0.0))
            .collect();
        let secs = [5, 30, 120, 600, 3600, 21600, 21600, 21600];
        for (d, s) in delays.iter().zip(secs) {
            assert_eq!(*d, Next::Retry(Duration::from_secs(s)));
        }
    }

    #[test]
    fn jitter_moves_the_delay_by_at_most_a_fifth() {
        assert_eq!(
            after_failure(1, Duration::ZERO, &SCHEDULE, DAYS_3, 0.2),
            Next::Retry(Duration::from_secs(6))
        );
        assert_eq!(
            after_failure(1, Duration::ZERO, &SCHEDULE, DAYS_3, -0.9),
            Next::Retry(Duration::from_secs(4))
        );
        for _ in 0..100 {
            let j = jitter();
            assert!((-0.2..=0.2).contains(&j));
        }
    }

    #[test]
    fn an_attempt_past_the_max_age_fails_instead() {
        let almost = DAYS_3 - Duration::from_secs(100);
        assert_eq!(after_failure(7, almost, &SCHEDULE, DAYS_3, 0.0), Next::Fail);
        assert_eq!(
            after_failure(1, almost, &SCHEDULE, DAYS_3, 0.0),
            Next::Retry(Duration::from_secs(5))
        );
        assert_eq!(after_failure(1, Duration::ZERO, &[], DAYS_3, 0.0), Next::Fail);
    }
}
