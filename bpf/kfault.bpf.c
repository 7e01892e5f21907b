//go:build ignore

// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * kfault hot path: one program per hooked kernel function, shared by every armed rule.
 *
 * Each loaded instance is told which hook it is (hook_id, a load-time constant) and shares five
 * maps with every other instance (and, with call chains, the three of kfault_chain.bpf.h):
 *   kfault_rules:    {cgroup id, hook id} -> the rules armed on that cgroup subtree for that hook
 *   kfault_levels:   hook id -> bitmap of the cgroup levels that have rules for that hook
 *   kfault_counters: rule id -> number of faults injected by that rule
 *   kfault_events:   ring buffer of sampled injections (who was hit, when), for logs and status
 *   kfault_event_drops: samples lost to a full ring buffer
 *
 * A call is in scope when, for some armed level L, the current task's ancestor cgroup at level L
 * (bpf_get_current_ancestor_cgroup_id, which is the task's own cgroup when L is its own level)
 * has rules. The cost is one hash lookup per distinct armed level, whatever the number of armed
 * cgroups. Checks run cheapest first: cgroup -> rule state -> call chain -> probability -> times.
 * The call-chain frame programs run the same scope check (armed_ancestors) first, against their
 * own pair of maps, so that a frame costs tasks outside the armed cgroups that check and nothing
 * else.
 */
#include "kfault_bpf.h"

#define MAX_HOOKS 64
#define MAX_LEVELS 32
#define MAX_SLOTS 8

/*
 * armed_ancestors is the cgroup scope check of every program, hook or frame, defined once. bits
 * is the bitmap of the cgroup levels that have something armed for the calling program (a
 * kfault_levels or kfault_frame_levels value). For each of those levels, outermost first, it
 * passes the current task's ancestor cgroup id at that level to check (with arg); at the first
 * nonzero answer it stores it in *ret and returns 1. It returns 0 when there is none, at once
 * when bits is 0. check is a global function (eval_cgroup, kfault_frame_scoped): the verifier
 * checks it once, not once per level, and the loop stays a real, small loop. Always inlined, with
 * a constant check, so the call is direct (BPF has no indirect calls). Its shape (the store
 * through ret, the early return) is the loop the hooks had before it was shared: the hook
 * programs compile to the same instructions; returning the answer instead made clang reorder
 * blocks and spill in the bio programs.
 */
static __always_inline int armed_ancestors(__u64 bits, __s64 (*check)(__u64 cgroup, __u64 arg), __u64 arg,
					   __s64 *ret)
{
	for (int level = 0; level < MAX_LEVELS && bits; level++, bits >>= 1) {
		if (!(bits & 1))
			continue;
		__u64 cgroup = bpf_get_current_ancestor_cgroup_id(level);
		if (!cgroup)
			break; /* the task's cgroup is shallower than this level, and than the next ones */
		if ((*ret = check(cgroup, arg)))
			return 1;
	}
	return 0;
}

#ifndef KFAULT_NO_CHAINS
#include "kfault_chain.bpf.h" /* call chains: frame programs, per-task state, chain_active */
#endif
#include "kfault_exec.bpf.h" /* the exec boundary: per-task eligibility, exec and fork programs */

char LICENSE[] SEC("license") = "Dual BSD/GPL";

#define MAX_RULES 16384
#define MAX_KEYS 16384

#define RULE_ACTIVE 1u
#define RULE_ALWAYS 2u /* probability 100%: no random draw */
#define RULE_EXEC 4u    /* only for tasks past the exec boundary (kfault_exec.bpf.h) */
#define RULE_DEVICES 8u /* bio: only bios to the devices of kfault_rule_devs {counter, dev} */

#define MAX_RULE_DEVS 16384
#define MAX_PROTECTED_DEVS 64

struct rule_key {
	__u64 cgroup;
	__u32 hook;
	__u32 _pad;
};

struct rule {
	__u64 threshold; /* inject when bpf_get_prandom_u32() < threshold */
	__u64 limit;     /* times: maximum number of injections, 0 = unlimited */
	__s64 retval;    /* value the hooked function returns instead */
	__u32 counter;   /* index in kfault_counters */
	__u32 chain_id;  /* 0 = no call chain; else the chain whose state to consult */
	__u32 flags;
	__u32 _pad;
};

struct rule_set {
	__u32 n;
	__u32 _pad;
	struct rule rules[MAX_SLOTS];
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MAX_KEYS);
	__type(key, struct rule_key);
	__type(value, struct rule_set);
} kfault_rules SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, MAX_HOOKS);
	__type(key, __u32);
	__type(value, __u64);
} kfault_levels SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, MAX_RULES);
	__type(key, __u32);
	__type(value, __u64);
} kfault_counters SEC(".maps");

/*
 * One sampled injection. Only the injecting path writes events, and only some of them (see
 * sample_first, sample_mask), so a fault firing millions of times costs the ring buffer little.
 */
struct event {
	__u64 time_ns;  /* bpf_ktime_get_ns (CLOCK_MONOTONIC) */
	__u64 cgroup;   /* the armed cgroup whose rule matched (the rule key) */
	__u64 pid_tgid; /* current task: tgid << 32 | pid */
	__u64 seq;      /* this rule's injection number, from 1 (counts the seed of a re-arm) */
	__s64 retval;   /* the value the hooked function returned */
	__u32 counter;  /* the rule's index in kfault_counters */
	__u32 hook;     /* hook_id of the program that injected */
	char comm[16];
};

/* Never used: puts struct event into the object's BTF, so that bpf2go generates its Go type. */
const struct event *unused_event __attribute__((unused));

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 256 * 1024);
} kfault_events SEC(".maps");

/* Samples lost because kfault_events was full (the reader fell behind). */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} kfault_event_drops SEC(".maps");

/*
 * Block devices (kernel dev_t: major << 20 | minor) of the rules with a devices list: a rule
 * with RULE_DEVICES fails a bio only when {its counter, the bio's device} is here.
 */
struct rule_dev {
	__u32 counter;
	__u32 dev;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MAX_RULE_DEVS);
	__type(key, struct rule_dev);
	__type(value, __u8);
} kfault_rule_devs SEC(".maps");

/*
 * The node's protected block devices (those holding /, containerd's and kubelet's roots, the
 * plugin's state, what the node config adds, and the devices under them): no bio to them is
 * ever failed, whatever the rule.
 */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MAX_PROTECTED_DEVS);
	__type(key, __u32);
	__type(value, __u8);
} kfault_protected_devs SEC(".maps");

/* Set per loaded instance by the engine. */
volatile const __u32 hook_id = 0;
/* __GFP_NOFAIL of the running kernel (from BTF when it has ___GFP_NOFAIL_BIT, else 0x8000). */
volatile const __u64 gfp_nofail = 0x8000;

/*
 * Interrupt context: a slab or page allocation in a hard or soft interrupt runs "as" whatever task
 * it interrupted, so the cgroup of current says nothing about who asked. Those calls are never
 * failed (the kernel's own fault injection filters on in_task() the same way). The engine passes
 * the addresses needed to read this CPU's preempt count (0 when unknown: check skipped).
 */
volatile const __u64 per_cpu_offset_addr = 0; /* &__per_cpu_offset[0] */
volatile const __u64 preempt_count_addr = 0;  /* per-cpu address of the preempt count */

/*
 * bi_opf flags of the bios never failed: REQ_META | REQ_PREFLUSH | REQ_FUA of the running kernel
 * (from BTF enum req_flag_bits; the engine's fallback is 6.1's bits 12, 18 and 17). Filesystem
 * metadata and journal writes (jbd2 writes with REQ_META | REQ_SYNC | REQ_IDLE, its commit
 * blocks add REQ_PREFLUSH | REQ_FUA) are never failed: failing them makes the filesystem abort
 * its journal and remount read-only for every task on the node.
 */
volatile const __u32 bio_never_flags = (1u << 12) | (1u << 17) | (1u << 18);

/* Sampling: a rule's first sample_first injections, then every (sample_mask+1)th. */
volatile const __u64 sample_first = 8;
volatile const __u64 sample_mask = 1023;

#define NMI_MASK 0x00f00000u
#define HARDIRQ_MASK 0x000f0000u
#define SOFTIRQ_OFFSET 0x00000100u

static __always_inline int in_task(void)
{
	__u64 base = per_cpu_offset_addr, pc_addr = preempt_count_addr;
	if (!base || !pc_addr)
		return 1;
	__u64 off = 0;
	__u32 pc = 0;
	__u32 cpu = bpf_get_smp_processor_id();
	if (bpf_probe_read_kernel(&off, sizeof(off), (void *)(base + (__u64)cpu * 8)))
		return 1;
	if (bpf_probe_read_kernel(&pc, sizeof(pc), (void *)(pc_addr + off)))
		return 1;
	return !(pc & (NMI_MASK | HARDIRQ_MASK | SOFTIRQ_OFFSET));
}

/* emit_sample reports injection number old+1 of rule r when it is one of the sampled ones. */
static __always_inline void emit_sample(struct rule *r, __u64 old, __u64 cgroup)
{
	if (old >= sample_first && (old & sample_mask) != sample_mask)
		return;
	struct event ev = {};
	ev.time_ns = bpf_ktime_get_ns();
	ev.cgroup = cgroup;
	ev.pid_tgid = bpf_get_current_pid_tgid();
	ev.seq = old + 1;
	ev.retval = r->retval;
	ev.counter = r->counter;
	ev.hook = hook_id;
	bpf_get_current_comm(ev.comm, sizeof(ev.comm));
	/* A full ring buffer drops the sample, never the fault; the drop is counted. */
	if (bpf_ringbuf_output(&kfault_events, &ev, sizeof(ev), 0)) {
		__u32 zero = 0;
		__u64 *drops = bpf_map_lookup_elem(&kfault_event_drops, &zero);
		if (drops)
			__sync_fetch_and_add(drops, 1);
	}
}

/*
 * eval_cgroup's arg: bit 0 asks for the task checks; the other bits are the bio of a bio hook
 * (0 for the other hooks; a struct bio is at least 8-byte aligned). Global functions take
 * scalars only, so the bio travels as a number and is read with probe reads.
 */
#define ARG_TASK_CHECKS 1u

struct block_device {
	__u32 bd_dev; /* dev_t */
} __attribute__((preserve_access_index));

struct blkcg_gq;

struct bio {
	struct block_device *bi_bdev; /* 5.12+; the partition's, at should_fail_bio time */
	__u32 bi_opf;
	struct blkcg_gq *bi_blkg;
} __attribute__((preserve_access_index));

/*
 * bio_never tells whether bio must never be failed: metadata, flush or FUA (bio_never_flags), a
 * device that cannot be told (no bi_bdev: kernels before 5.12), or a protected device. Else it
 * stores the bio's device in *dev. should_fail_bio runs in submit_bio_noacct before the partition
 * remap, and the remap (6.1) only shifts the sector: bi_bdev is the partition's block_device, so
 * bd_dev is the dev_t that stat() shows for /dev/sda1 (st_rdev) and for files on it (st_dev).
 * A stacked device (dm, md) resubmits clones to the devices below it: those are protected too
 * (the engine adds the slaves of a protected device).
 */
static __always_inline int bio_never(struct bio *bio, __u32 *dev)
{
	__u32 opf = 0;
	struct block_device *bdev = 0;
	__u32 d = 0;

	if (CORE_READ_INTO(&opf, bio->bi_opf) || (opf & bio_never_flags))
		return 1;
	if (!CORE_FIELD_EXISTS(bio->bi_bdev))
		return 1;
	if (CORE_READ_INTO(&bdev, bio->bi_bdev) || !bdev)
		return 1;
	if (CORE_READ_INTO(&d, bdev->bd_dev))
		return 1;
	if (bpf_map_lookup_elem(&kfault_protected_devs, &d))
		return 1;
	*dev = d;
	return 0;
}

/*
 * eval_cgroup decides whether one of the rules armed on cgroup (for this program's hook) injects a
 * fault now, and returns the value to inject (0: none; an injected value is never 0). With
 * ARG_TASK_CHECKS in arg, the current task must also be one faults are meant for: in task
 * context (in_task) and, for a rule armed with the exec boundary, past it (kfault_task_eligible);
 * the bio writeback path attributes through the bio and skips them. With a bio in arg, the bio
 * must be one that may fail (bio_never) and a rule with devices must list the bio's device: both
 * only after a rule set matched, so bios of tasks outside the armed cgroups pay nothing for them.
 *
 * A global function: the verifier checks it once, not once per unrolled cgroup level of its
 * callers. That cut a hook program's verification from about 47,000 to about 6,000 processed
 * instructions, most of the time a first arm took. Its arguments are scalars only, which global
 * functions take since 5.6 (a map-value pointer would need 5.12).
 */
__attribute__((noinline)) __s64 eval_cgroup(__u64 cgroup, __u64 arg)
{
	struct rule_key key = {.cgroup = cgroup, .hook = hook_id};
	struct rule_set *set = bpf_map_lookup_elem(&kfault_rules, &key);
	if (!set)
		return 0;
	if ((arg & ARG_TASK_CHECKS) && !in_task())
		return 0;
	/* A bio hook passes the bio: its flags and device are read once a rule set matched. */
	__u32 dev = 0;
	__u64 bio = arg & ~(__u64)ARG_TASK_CHECKS;
	if (bio && bio_never((struct bio *)bio, &dev))
		return 0;
	__u32 n = set->n;

	for (int i = 0; i < MAX_SLOTS; i++) {
		if (i >= n)
			break;
		struct rule *r = &set->rules[i];
		__u32 flags = r->flags;
		if (!(flags & RULE_ACTIVE))
			continue;
		/* Exec boundary: only after a rule matched the cgroup, so bystanders never pay it. */
		if ((flags & RULE_EXEC) && (arg & ARG_TASK_CHECKS) && !kfault_task_eligible())
			continue;
		/* Call chain: every frame of the rule's chain is on this task's stack, in order. */
#ifndef KFAULT_NO_CHAINS
		if (r->chain_id && !kfault_chain_active(r->chain_id))
			continue;
#else
		if (r->chain_id) /* never armed: the engine refuses call chains with this object */
			continue;
#endif
		/* Devices: one hash lookup, only for the rules that list devices. */
		if (flags & RULE_DEVICES) {
			struct rule_dev rd = {.counter = r->counter, .dev = dev};
			if (!bio || !bpf_map_lookup_elem(&kfault_rule_devs, &rd))
				continue;
		}

		__u32 idx = r->counter;
		__u64 *count = bpf_map_lookup_elem(&kfault_counters, &idx);
		if (!count)
			continue;
		__u64 limit = r->limit;
		/* An exhausted budget costs one plain read, no random draw and no atomic. */
		if (limit && *count >= limit)
			continue;
		if (!(flags & RULE_ALWAYS) && (__u64)bpf_get_prandom_u32() >= r->threshold)
			continue;
		/* times is exact: only the callers that got an old value below the limit inject. */
		__u64 old = __sync_fetch_and_add(count, 1);
		if (limit && old >= limit)
			continue;
		emit_sample(r, old, cgroup);
		return r->retval;
	}
	return 0;
}

/* match_current looks the current task's cgroup subtree up; bio is 0 for non-bio hooks. */
static __always_inline int match_current(__u64 bio, __s64 *ret)
{
	__u32 hook = hook_id;
	__u64 *bitsp = bpf_map_lookup_elem(&kfault_levels, &hook);
	if (!bitsp)
		return 0;
	return armed_ancestors(*bitsp, eval_cgroup, bio | ARG_TASK_CHECKS, ret);
}

/* --- bio attribution through the bio's blkcg (buffered writeback is submitted by kworkers) --- */

struct kernfs_node {
	__u64 id;
} __attribute__((preserve_access_index));

struct cgroup {
	struct kernfs_node *kn;
	int level;
	struct cgroup *ancestors[];
} __attribute__((preserve_access_index));

struct cgroup_subsys_state {
	struct cgroup *cgroup;
} __attribute__((preserve_access_index));

struct blkcg {
	struct cgroup_subsys_state css;
} __attribute__((preserve_access_index));

struct blkcg_gq {
	struct blkcg *blkcg;
} __attribute__((preserve_access_index));


static __always_inline int match_bio(struct bio *bio, __s64 *ret)
{
	struct blkcg_gq *blkg = 0;
	struct blkcg *blkcg = 0;
	struct cgroup *cgrp = 0;
	int cgrp_level = 0;

	if (!CORE_FIELD_EXISTS(bio->bi_blkg)) /* CONFIG_BLK_CGROUP off */
		return 0;
	CORE_READ_INTO(&blkg, bio->bi_blkg);
	if (!blkg)
		return 0;
	CORE_READ_INTO(&blkcg, blkg->blkcg);
	if (!blkcg)
		return 0;
	CORE_READ_INTO(&cgrp, blkcg->css.cgroup);
	if (!cgrp)
		return 0;
	if (!CORE_FIELD_EXISTS(cgrp->ancestors)) /* before 6.1: ancestor_ids[]; not handled */
		return 0;
	CORE_READ_INTO(&cgrp_level, cgrp->level);

	__u32 hook = hook_id;
	__u64 *bitsp = bpf_map_lookup_elem(&kfault_levels, &hook);
	if (!bitsp)
		return 0;
	__u64 bits = *bitsp;
	struct cgroup **ancestors = (struct cgroup **)__builtin_preserve_access_index(&cgrp->ancestors[0]);

	for (int level = 0; level < MAX_LEVELS && bits; level++, bits >>= 1) {
		if (!(bits & 1))
			continue;
		if (level > cgrp_level)
			break;
		struct cgroup *anc = 0;
		struct kernfs_node *kn = 0;
		bpf_probe_read_kernel(&anc, sizeof(anc), ancestors + level);
		if (!anc)
			break;
		CORE_READ_INTO(&kn, anc->kn);
		if (!kn)
			break;
		__u64 cgroup = 0;
		CORE_READ_INTO(&cgroup, kn->id);
		if (cgroup && (*ret = eval_cgroup(cgroup, (__u64)bio)))
			return 1;
	}
	return 0;
}

/* --- the decision per hook kind --- */

static __always_inline int decide_gfp(__u64 gfp, __s64 *ret)
{
	/* The kernel's own failslab and fail_page_alloc never fail __GFP_NOFAIL allocations. */
	if ((__u32)gfp & gfp_nofail)
		return 0;
	return match_current(0, ret);
}

static __always_inline int decide_bio(struct bio *bio, __s64 *ret)
{
	/* Direct I/O: current is the submitter. Writeback: attribute through the bio's blkcg. */
	return match_current((__u64)bio, ret) || match_bio(bio, ret);
}

/*
 * --- fmod_ret (BPF_MODIFY_RETURN): a nonzero return value replaces the function's ---
 * The trampoline hands the function's caller all 64 bits of the program's r0. The programs
 * return __s64 so that clang moves all 64: declared int, it may copy only the low 32 bits
 * (w0 = w6), and a syscall returning long then gets 4294967283 instead of -13.
 */

SEC("fmod_ret/should_failslab")
__s64 kfault_fm_slab(__u64 *ctx)
{
	__s64 ret = 0;
	/* should_failslab(struct kmem_cache *s, gfp_t gfpflags) */
	if (decide_gfp(ctx[1], &ret))
		return ret;
	return 0;
}

SEC("fmod_ret/should_fail_alloc_page")
__s64 kfault_fm_page(__u64 *ctx)
{
	__s64 ret = 0;
	/* should_fail_alloc_page(gfp_t gfp_mask, unsigned int order) */
	if (decide_gfp(ctx[0], &ret))
		return ret;
	return 0;
}

SEC("fmod_ret/should_fail_bio")
__s64 kfault_fm_bio(__u64 *ctx)
{
	__s64 ret = 0;
	/*
	 * should_fail_bio(struct bio *bio). Loaded from ctx, the verifier types the argument as a
	 * BTF pointer, which may not be tagged (eval_cgroup's arg) nor passed to a global function;
	 * read through a probe read it is a plain number, as a kprobe's register is. The bio is only
	 * ever read with probe reads.
	 */
	__u64 bio = 0;
	if (bpf_probe_read_kernel(&bio, sizeof(bio), &ctx[0]))
		return 0;
	if (decide_bio((struct bio *)bio, &ret))
		return ret;
	return 0;
}

/* Any function on the error-injection list; the engine sets the attach target at load time. */
SEC("fmod_ret/should_failslab")
__s64 kfault_fm_func(__u64 *ctx)
{
	__s64 ret = 0;
	if (match_current(0, &ret))
		return ret;
	return 0;
}

/* --- kprobe + bpf_override_return --- */

SEC("kprobe/should_failslab")
int kfault_kp_slab(struct pt_regs *regs)
{
	__s64 ret = 0;
	if (decide_gfp(PARM2(regs), &ret))
		bpf_override_return(regs, ret);
	return 0;
}

SEC("kprobe/should_fail_alloc_page")
int kfault_kp_page(struct pt_regs *regs)
{
	__s64 ret = 0;
	if (decide_gfp(PARM1(regs), &ret))
		bpf_override_return(regs, ret);
	return 0;
}

SEC("kprobe/should_fail_bio")
int kfault_kp_bio(struct pt_regs *regs)
{
	__s64 ret = 0;
	if (decide_bio((struct bio *)PARM1(regs), &ret))
		bpf_override_return(regs, ret);
	return 0;
}

SEC("kprobe/should_failslab")
int kfault_kp_func(struct pt_regs *regs)
{
	__s64 ret = 0;
	if (match_current(0, &ret))
		bpf_override_return(regs, ret);
	return 0;
}
#include "kfault_pending.bpf.h" /* arming by cgroup path: the cgroup_mkdir program */
