// Package bpf is the kfault fault engine: the hot-path BPF programs (kfault.bpf.c, compiled by
// bpf2go; the output is committed), the loader that arms and disarms rules, cgroup targets, and
// the kernel feature probes behind `kfault check`.
//
// # Programs and maps
//
// There is one loaded program per hooked kernel function (should_failslab,
// should_fail_alloc_page, should_fail_bio, or any function on the error-injection list),
// shared by every armed rule; never one per container. Each instance is loaded from a copy of
// the collection spec with its hook id as a load-time constant (.rodata), and the engine's seven
// maps replace the object's own (CollectionOptions.MapReplacements):
//
//   - kfault_rules (hash): {cgroup id, hook id} → up to 8 rules;
//   - kfault_levels (array): hook id → bitmap of the cgroup levels that have rules;
//   - kfault_counters (array): rule id → faults injected (seedable, read by Counts);
//   - kfault_events (ring buffer): sampled injections (who was hit, when), read by samples.go;
//   - kfault_event_drops (array, one entry): samples lost to a full ring buffer;
//   - kfault_rule_devs (hash): {rule id, dev} → 1, the devices of bio rules with a devices
//     list (RULE_DEVICES);
//   - kfault_protected_devs (hash): dev → 1, the node's protected block devices
//     (SetProtectedDevices), never failed by any bio rule.
//
// Call chains (chain.go, kfault_chain.bpf.h, docs/call-chains.md) add five more: kfault_frames
// (frame id → generation and user slots), kfault_chains (chain id → its frames),
// kfault_task_chains (task storage: per task, per frame, recursion-level masks of matched
// entries), and each frame's scope, the hook maps' counterpart: kfault_frame_levels (frame id →
// bitmap of cgroup levels) and kfault_frame_scope ({cgroup id, frame id} → rules armed there
// whose chain goes through the frame). Each distinct frame (function, parameters, predicate) has
// one fentry/fexit pair, with its compiled predicate spliced in, shared by every chain and
// container that uses it and attached while one does (and KeepIdle after). The entry program checks the scope
// first, as the hooks do, so a task outside it pays one array lookup and one hash lookup per
// armed level, and no predicate or task storage.
//
// A hook is attached when its first rule is armed and detached when its last rule goes, or, with
// Options.KeepIdle (kfault nri --keep-idle, default 1m), that long after: meanwhile it stays
// attached with an empty level bitmap, injecting nothing, and the next arm of it is map writes
// only (idle.go). An engine idle for longer runs nothing. Nothing is pinned: every link dies with
// the process. The kernel's parsed BTF and the kallsyms snapshot, about half of the live heap,
// are released too once unused for KeepIdle, and parsed again at the next need.
//
// # Scope and cost
//
// A call is in scope when, for some level L in the hook's bitmap, the current task's ancestor
// cgroup at level L (bpf_get_current_ancestor_cgroup_id; at the task's own level that is its
// own cgroup, so a separate bpf_get_current_cgroup_id lookup would only repeat one) has rules.
// A bystander pays one hash lookup per distinct armed level, whatever the number of armed
// cgroups. Checks then run cheapest first: interrupt context (never failed) → rule state →
// call chain (0 = none; else all its frames active for the task) → times budget already used
// (a plain read) → probability (bpf_get_prandom_u32 < threshold; 100% skips the draw) → times
// (atomic fetch-add: exact, only an old value below the limit injects).
//
// Measured (TestBenchArmedCgroups, 6.1 VM under TCG, eventfd+close loop in an un-targeted
// sibling cgroup, about three should_failslab calls per iteration): with slab faults armed in
// 1, 100 and 1000 other cgroups the loop takes 1.20-1.45x its time with nothing attached, flat
// in N; with the program attached but an empty level bitmap it already takes 1.38x (fmod_ret)
// and 1.25x (kprobe). So nearly all of the cost is the mechanism's entry (trampoline or kprobe
// under emulation), not the rule lookup (1-5% of the loop), and it does not grow with N.
//
// Slab and page faults never fail __GFP_NOFAIL allocations (the value comes from BTF's
// ___GFP_NOFAIL_BIT on 6.10+, else 0x8000). Bio faults attribute direct I/O by current and
// buffered writeback through bio->bi_blkg's cgroup (CO-RE; needs the io controller on the
// target's cgroup for the blkcg to be that cgroup). Once a bio's cgroup has a rule set for the
// hook, and only then, the bio is read (bio_never, eval_cgroup): a bio with REQ_META,
// REQ_PREFLUSH or REQ_FUA (bio_never_flags, from BTF enum req_flag_bits) or to a protected
// device (bio->bi_bdev->bd_dev in kfault_protected_devs: one hash lookup) is never failed, and a
// rule with devices fails only bios whose device is in kfault_rule_devs under its rule id (one
// more hash lookup per such rule). Bios of tasks outside the armed cgroups pay none of this.
//
// # Mechanisms
//
// fmod_ret (BPF_MODIFY_RETURN) when the kernel allows it, else kprobe + bpf_override_return;
// Options.Mechanism can force either. NewEngine probes them by loading and attaching a trivial
// program (mechanism.go: HaveFmodRet, HaveKprobeOverride, whose answers are kept for the
// process), kprobe only when its answer matters, and chooseMechanism decides.
//
// # Limits
//
// 64 hooked functions, 16384 armed faults, 16384 {cgroup, function} pairs, 8 faults per pair,
// cgroup levels 0..31, cgroup v2 only, amd64 only (pt_regs layout of the kprobe programs).
package bpf
