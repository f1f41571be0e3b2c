//! How often the harness reached each path: the drivers check that none stays at zero.

/// How often each path was reached, for the drivers' coverage checks.
#[derive(Clone, Copy, Debug, Default)]
pub struct Stats {
    pub ops: u64,
    pub reads: u64,
    pub writes_handled: u64,
    pub writes_gp: u64,
    pub host_events: u64,
    pub host_reflected: u64,
    pub not_owned: u64,
    pub frame_out_of_range: u64,
    pub injections: u64,
    pub inject_refused: u64,
    pub broadcast: u64,
    pub local: u64,
    pub single: u64,
    pub srar_with_consumer: u64,
    pub downgraded: u64,
    pub skipped: u64,
    pub shutdown: u64,
    pub overflow: u64,
    pub list_full: u64,
    pub broken_access: u64,
    pub saves: u64,
    pub saves_refused: u64,
    pub stash_restored: u64,
    pub stash_refused: u64,
    pub hostile_restored: u64,
    pub hostile_refused: u64,
    pub capacity_refused: u64,
    pub missing_vcpu: u64,
    pub restored_caps: u64,
    pub setups_refused: u64,
}

impl Stats {
    /// The counters that are still zero.
    pub fn unreached(&self) -> Vec<&'static str> {
        let all = [
            ("reads", self.reads),
            ("writes_handled", self.writes_handled),
            ("writes_gp", self.writes_gp),
            ("host_events", self.host_events),
            ("host_reflected", self.host_reflected),
            ("not_owned", self.not_owned),
            ("frame_out_of_range", self.frame_out_of_range),
            ("injections", self.injections),
            ("inject_refused", self.inject_refused),
            ("broadcast", self.broadcast),
            ("local", self.local),
            ("single", self.single),
            ("srar_with_consumer", self.srar_with_consumer),
            ("downgraded", self.downgraded),
            ("skipped", self.skipped),
            ("shutdown", self.shutdown),
            ("overflow", self.overflow),
            ("list_full", self.list_full),
            ("broken_access", self.broken_access),
            ("saves", self.saves),
            ("saves_refused", self.saves_refused),
            ("stash_restored", self.stash_restored),
            ("stash_refused", self.stash_refused),
            ("hostile_restored", self.hostile_restored),
            ("hostile_refused", self.hostile_refused),
            ("capacity_refused", self.capacity_refused),
            ("missing_vcpu", self.missing_vcpu),
            ("restored_caps", self.restored_caps),
            ("setups_refused", self.setups_refused),
        ];
        all.iter()
            .filter(|(_, count)| *count == 0)
            .map(|(name, _)| *name)
            .collect()
    }

    pub fn add(&mut self, other: &Stats) {
        macro_rules! sum {
            ($($field:ident),*) => { $(self.$field += other.$field;)* };
        }
        sum!(
            ops,
            reads,
            writes_handled,
            writes_gp,
            host_events,
            host_reflected,
            not_owned,
            frame_out_of_range,
            injections,
            inject_refused,
            broadcast,
            local,
            single,
            srar_with_consumer,
            downgraded,
            skipped,
            shutdown,
            overflow,
            list_full,
            broken_access,
            saves,
            saves_refused,
            stash_restored,
            stash_refused,
            hostile_restored,
            hostile_refused,
            capacity_refused,
            missing_vcpu,
            restored_caps,
            setups_refused
        );
    }
}
