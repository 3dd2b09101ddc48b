//! Swarm testing: what each seed draws besides its traffic, namely the gateway config and the
//! shape of the traffic (burstiness, hot keys, failure and hang rates, signal kinds).
//!
//! Every seed under one fixed mix would average out to the same mild world. Drawing the mix per
//! seed makes some seeds extreme: a queue of one message, an intake of three, a reload deadline
//! shorter than the runs, half the runs failing, every signal a stop. Each setting sits at its
//! plain value for the plain pick, so a shrunk scenario keeps only the extremes it needs.

use quiesce::config::{ChannelInbound, Config, DropPolicy, QueueMode, QueueOverride};
use quiesce::message::{ChannelId, SessionId};

use super::dice::Pick;

/// The traffic's shape for one seed, in percentages and ms.
#[derive(Clone, Copy, Debug)]
pub(super) struct Knobs {
    /// Arrivals sent with `debounce` off.
    pub(super) control_pct: u32,
    /// Arrivals that carry their own window.
    pub(super) item_window_pct: u32,
    /// Arrivals that fall into a burst.
    pub(super) burst_pct: u32,
    /// How long a burst lasts.
    pub(super) burst_ms: u64,
    /// Arrivals that go to the hot key.
    pub(super) hot_pct: u32,
    /// The hot key's index, modulo the keys.
    pub(super) hot_key: usize,
    /// Scripted runs that fail.
    pub(super) fail_pct: u32,
    /// Scripted runs that hang until the run timeout.
    pub(super) hang_pct: u32,
    /// Scripted runs that take long enough to outlive a deadline.
    pub(super) long_pct: u32,
    /// How long an unscripted run takes.
    pub(super) run_ms: u64,
    /// Signals that are stops rather than reloads.
    pub(super) stop_pct: u32,
    /// Signals the gateway sends itself.
    pub(super) internal_pct: u32,
    /// Reloads that bring a changed config.
    pub(super) new_config_pct: u32,
    /// Closes that take longer than the close budget.
    pub(super) slow_close_pct: u32,
    /// How long after an exit the process starts again, unless a boot is scheduled.
    pub(super) restart_after_ms: u64,
}

impl Knobs {
    /// A mild, fixed mix for runs without swarm testing.
    pub(super) const STEADY: Knobs = Knobs {
        control_pct: 5,
        item_window_pct: 0,
        burst_pct: 30,
        burst_ms: 500,
        hot_pct: 10,
        hot_key: 0,
        fail_pct: 20,
        hang_pct: 5,
        long_pct: 20,
        run_ms: 200,
        stop_pct: 30,
        internal_pct: 10,
        new_config_pct: 0,
        slow_close_pct: 10,
        restart_after_ms: 1_000,
    };

    /// A mix drawn from 15 picks.
    pub(super) fn draw(p: &[Pick; 15]) -> Self {
        Knobs {
            control_pct: p[0].scale(0, 30) as u32,
            item_window_pct: if p[1].chance(30) { p[1].scale(1, 20) as u32 } else { 0 },
            burst_pct: p[2].scale(0, 100) as u32,
            burst_ms: p[3].scale(1, 3_000),
            hot_pct: if p[4].chance(40) { p[4].scale(10, 70) as u32 } else { 0 },
            hot_key: p[5].permille as usize,
            fail_pct: p[6].scale(0, 60) as u32,
            hang_pct: p[7].scale(0, 20) as u32,
            long_pct: p[8].scale(0, 50) as u32,
            run_ms: if p[9].chance(20) { 0 } else { p[9].scale(1, 1_500) },
            stop_pct: p[10].scale(0, 60) as u32,
            internal_pct: p[11].scale(0, 30) as u32,
            new_config_pct: p[12].scale(0, 50) as u32,
            slow_close_pct: p[13].scale(0, 40) as u32,
            restart_after_ms: p[14].scale(1, 5_000),
        }
    }
}

/// A per-seed config from 15 picks: each setting sometimes at an edge that makes restarts hard,
/// such as a deadline shorter than the runs, a queue of one or an intake of a few.
pub(super) fn draw_config(p: &[Pick; 15]) -> Config {
    let mut config = Config::default();
    config.inbound.window_ms = window_ms(p[0]);
    config.inbound.keys_max = if p[1].chance(15) { p[1].scale(1, 4) as usize } else { 2_048 };
    config.queue.mode = queue_mode(p[2].permille);
    config.queue.cap = if p[3].chance(30) { p[3].scale(1, 5) } else { p[3].scale(6, 40) } as usize;
    config.queue.drop = drop_policy(p[4].permille);
    config.queue.quiet_ms = if p[5].chance(20) { 0 } else { p[5].scale(1, 2_000) };

    config.run.timeout_ms = run_timeout_ms(p[6]);
    config.run.attempts_max =
        if p[7].chance(30) { p[7].scale(1, 2) } else { p[7].scale(3, 6) } as u32;

    config.reload.allow_external = !p[8].chance(15);
    config.reload.deadline_ms = deadline_ms(p[9], 90_000);
    config.stop.deadline_ms = deadline_ms(p[10], 25_000);
    config.close_budget_ms =
        if p[11].chance(20) { p[11].scale(1, 200) } else { p[11].scale(200, 5_000) };
    config.intake_max = if p[12].chance(20) { p[12].scale(1, 8) as usize } else { 10_000 };
    config
}

/// Sets some channels' own windows, one pick per channel.
pub(super) fn add_channel_windows(config: &mut Config, picks: &[Pick], channels: &[ChannelId]) {
    for (pick, channel) in picks.iter().zip(channels) {
        if pick.chance(30) {
            let window_ms = Some(pick.scale(0, 3_000));
            config.inbound.channels.insert(channel.clone(), ChannelInbound { window_ms });
        }
    }
}

/// Overrides the queue settings of one session.
pub(super) fn add_session_override(config: &mut Config, session: &SessionId, picks: [Pick; 4]) {
    config.queue.sessions.insert(session.clone(), queue_override(picks));
}

/// Overrides the queue settings of one channel.
pub(super) fn add_channel_override(config: &mut Config, channel: &ChannelId, picks: [Pick; 4]) {
    config.queue.channels.insert(channel.clone(), queue_override(picks));
}

/// A reload's config read afresh: the current one with one setting changed.
pub(super) fn changed_config(config: &Config, pick: Pick) -> Config {
    let mut next = config.clone();
    match pick.sel % 4 {
        0 => next.inbound.window_ms = pick.scale(0, 3_000),
        1 => next.queue.cap = pick.scale(1, 30) as usize,
        2 => next.queue.mode = queue_mode(pick.permille),
        _ => next.reload.deadline_ms = deadline_ms(pick, 90_000),
    }
    next
}

/// A debounce window: off, short or long.
fn window_ms(pick: Pick) -> u64 {
    match pick.sel {
        0..20 => 0,
        20..50 => pick.scale(1, 100),
        _ => pick.scale(100, 3_000),
    }
}

fn queue_mode(permille: u64) -> QueueMode {
    if permille < 500 { QueueMode::Collect } else { QueueMode::Followup }
}

fn drop_policy(permille: u64) -> DropPolicy {
    match permille {
        0..333 => DropPolicy::Summarize,
        333..666 => DropPolicy::Old,
        _ => DropPolicy::New,
    }
}

fn run_timeout_ms(pick: Pick) -> u64 {
    match pick.sel {
        0..30 => 600_000,
        30..80 => pick.scale(2_000, 60_000),
        _ => pick.scale(200, 2_000),
    }
}

/// A restart deadline: often short enough that runs outlive it.
fn deadline_ms(pick: Pick, long_ms: u64) -> u64 {
    if pick.chance(35) { pick.scale(50, 3_000) } else { pick.scale(3_000, long_ms) }
}

fn queue_override([mode, cap, drop, quiet]: [Pick; 4]) -> QueueOverride {
    QueueOverride {
        mode: mode.chance(50).then(|| queue_mode(mode.permille)),
        cap: cap.chance(50).then(|| cap.scale(1, 10) as usize),
        drop: drop.chance(50).then(|| drop_policy(drop.permille)),
        quiet_ms: quiet.chance(50).then(|| quiet.scale(0, 2_000)),
    }
}
