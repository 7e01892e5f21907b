/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Call chains: per-task frame tracking, included by kfault.bpf.c (one object, so that the hot
 * path and the frame programs share the maps; the engine shares them across loaded instances
 * with MapReplacements, as for the rule maps).
 *
 * A frame is (function, parameters, predicate). Every distinct frame armed anywhere gets a frame
 * id (0..MAX_FRAME_IDS-1) and one fentry + fexit program pair, shared by every chain that
 * contains it. A chain is a list of frames; each (chain, position) is a "user" of its frame and
 * owns one user slot (0..MAX_FRAME_USERS-1) of that frame. kfault_frames[frame] says, per slot,
 * which (frame, slot) must be active when the frame is entered (the previous frame of that
 * chain; none for position 0).
 *
 * Per task (task storage, created on the first matching entry of a task in the frame's scope,
 * see Scope below), per frame id:
 *   calls:    how many invocations of the frame's function are on this task's stack (counted
 *             while the storage exists and the frame program is attached);
 *   mask[u]:  bit L set = the invocation at recursion level L matched for user slot u: its
 *             predicate held and the previous frame of u's chain was active at entry.
 * Entry sets the bits of the matching slots at level calls and increments calls; exit
 *  decrements calls and clears bit calls in every slot. So recursion keeps each level's own
 * answer, and an early or exceptional return clears exactly what its entry set. A (chain, i) is
 * active while mask[u] != 0. Levels >= 32 are counted but never matched.
 *
 * Loops are unrolled (#pragma unroll): with a real loop the verifier tracks the counter and the
 * slot bitmask precisely and explores every combination (seconds per load under emulation).
 *
 * gen: each frame id allocation gets a new generation; state whose gen differs is stale (the
 * frame id was freed and reused while the task was inside the old function) and reads as
 * empty.
 *
 * Scope: a frame's programs are attached for the whole node, but only tasks in the cgroups whose
 * armed rules have a chain through the frame need its state. The entry program first runs the
 * hook programs' cgroup check (armed_ancestors, kfault.bpf.c) against the frame's own maps:
 *   kfault_frame_levels: frame id -> bitmap of the cgroup levels with rules using the frame
 *   kfault_frame_scope:  {cgroup id, frame id} -> number of such rules armed on that cgroup
 * and returns at once for any other task: one array lookup and one hash lookup per armed level,
 * whatever the number of armed containers; no task storage, no predicate. The exit program has
 * no scope check: its task-storage lookup finds nothing for a task without state (cheaper than
 * the scope check), and an exit must undo its entry even if the task changed cgroups meanwhile.
 *
 * A task that changes cgroups inside a frame function (cgroup.procs written by someone else):
 * entries are recorded only while it is in scope, exits always. Moving out, the exit of an
 * unrecorded inner call can clear the outer level early (the chain reads inactive sooner); moving
 * in, calls entered before are not on record (as for calls entered before the attach). Either
 * way the state errs towards "not active": a mask bit is only ever set by an invocation still on
 * the task's stack. Faults stay scoped anyway: the hot path checks the task's cgroup itself.
 */
#ifndef KFAULT_CHAIN_BPF_H
#define KFAULT_CHAIN_BPF_H

#define MAX_FRAME_IDS 32   /* distinct frames armed at once (power of 2) */
#define MAX_FRAME_USERS 8  /* chains positions sharing one frame (power of 2) */
#define MAX_CHAINS 256     /* distinct chains armed at once, id 0 unused */
#define MAX_CHAIN_FRAMES 8 /* frames per chain */
#define MAX_FRAME_LEVELS 32
#define MAX_FRAME_SCOPES 16384 /* {cgroup, frame} pairs armed at once */

#define FRAME_USER_VALID 1u
#define FRAME_USER_HAS_PREV 2u

#define BPF_MAP_TYPE_TASK_STORAGE_ 29
#define BPF_F_NO_PREALLOC_ 1
#define BPF_LOCAL_STORAGE_GET_F_CREATE_ 1

struct task_struct;
static void *(*bpf_task_storage_get)(void *map, struct task_struct *task, void *value, __u64 flags) = (void *)156;
static struct task_struct *(*bpf_get_current_task_btf)(void) = (void *)158;

struct frame_user {
	__u32 flags;      /* FRAME_USER_* */
	__u32 prev_frame; /* with HAS_PREV: the previous frame of this user's chain */
	__u32 prev_slot;  /* and this user's slot in it */
	__u32 prev_gen;   /* and its generation */
};

struct frame_info {
	__u32 gen;   /* this frame id's current generation (never 0 while in use) */
	__u32 first; /* bitmap of the valid slots without HAS_PREV (chain position 0) */
	struct frame_user users[MAX_FRAME_USERS];
};

struct chain_frame {
	__u32 frame;
	__u32 slot;
	__u32 gen;
	__u32 _pad;
};

struct chain {
	__u32 n;
	__u32 _pad;
	struct chain_frame frames[MAX_CHAIN_FRAMES];
};

struct frame_state {
	__u32 gen;
	__u32 calls;
	__u32 mask[MAX_FRAME_USERS];
};

struct task_chains {
	struct frame_state f[MAX_FRAME_IDS];
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, MAX_FRAME_IDS);
	__type(key, __u32);
	__type(value, struct frame_info);
} kfault_frames SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, MAX_CHAINS);
	__type(key, __u32);
	__type(value, struct chain);
} kfault_chains SEC(".maps");

struct frame_scope_key {
	__u64 cgroup;
	__u32 frame;
	__u32 _pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, MAX_FRAME_IDS);
	__type(key, __u32);
	__type(value, __u64);
} kfault_frame_levels SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MAX_FRAME_SCOPES);
	__type(key, struct frame_scope_key);
	__type(value, __u32);
} kfault_frame_scope SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_TASK_STORAGE_);
	__uint(map_flags, BPF_F_NO_PREALLOC_);
	__type(key, int);
	__type(value, struct task_chains);
} kfault_task_chains SEC(".maps");

/*
 * Index bounds the verifier can see: the mask is applied right where the index is used (the
 * compiler would otherwise mask once and spill, and a refilled 32-bit spill loses its bounds).
 */
static __always_inline __u32 frame_idx(__u32 x)
{
	asm volatile("%0 &= 31" : "+r"(x)); /* MAX_FRAME_IDS - 1 */
	return x;
}

static __always_inline __u32 slot_idx(__u32 x)
{
	asm volatile("%0 &= 7" : "+r"(x)); /* MAX_FRAME_USERS - 1 */
	return x;
}

/*
 * chain_active: every frame of chain id is active for the current task. A global function: the
 * verifier checks it once, not once per rule slot and cgroup level of the hot path's loops.
 */
__attribute__((noinline)) int kfault_chain_active(__u32 id)
{
	struct chain *c = bpf_map_lookup_elem(&kfault_chains, &id);
	if (!c)
		return 0;
	__u32 n = c->n;
	if (!n)
		return 0;
	struct task_chains *st = bpf_task_storage_get(&kfault_task_chains, bpf_get_current_task_btf(), 0, 0);
	if (!st)
		return 0;
	for (int i = 0; i < MAX_CHAIN_FRAMES; i++) {
		if (i >= n)
			break;
		struct chain_frame *cf = &c->frames[i];
		struct frame_state *fs = &st->f[frame_idx(cf->frame)];
		if (fs->gen != cf->gen || !fs->mask[slot_idx(cf->slot)])
			return 0;
	}
	return 1;
}

/* Set per loaded frame program pair by the engine. */
volatile const __u32 frame_id = 0;
/* What the predicate stub answers when no predicate is spliced in (a frame without one). */
volatile const __u32 frame_pred_default = 1;

/*
 * kfault_frame_scoped: rules armed on cgroup have a chain through this frame. The per-level check
 * of armed_ancestors; a global function like eval_cgroup (verified once), scalar arguments only.
 */
__attribute__((noinline)) __s64 kfault_frame_scoped(__u64 cgroup, __u64 unused)
{
	struct frame_scope_key key = {.cgroup = cgroup, .frame = frame_id};
	return bpf_map_lookup_elem(&kfault_frame_scope, &key) != 0;
}

/*
 * The frame's predicate: the engine replaces this body with the compiled predicate
 * (bpf/predicate Splice; ArgSource Tracing: ctx is the u64 argument array). R0 = 1 when it holds.
 */
static __attribute__((noinline)) int kfault_frame_pred(void *ctx)
{
	asm volatile("" : : "r"(ctx)); /* keeps the argument: the predicate reads R1 */
	return frame_pred_default;
}

SEC("fentry/d_alloc_parallel")
int kfault_frame_entry(__u64 *ctx)
{
	__u32 key = frame_id;
	/* Scope first: a task outside the cgroups armed with this frame pays this and returns. */
	__u64 *levels = bpf_map_lookup_elem(&kfault_frame_levels, &key);
	__s64 scoped = 0;
	if (!levels || !armed_ancestors(*levels, kfault_frame_scoped, 0, &scoped))
		return 0;
	struct frame_info *fi = bpf_map_lookup_elem(&kfault_frames, &key);
	if (!fi)
		return 0;
	__u32 gen = fi->gen;
	if (!gen)
		return 0;
	struct task_struct *task = bpf_get_current_task_btf();
	struct task_chains *st = bpf_task_storage_get(&kfault_task_chains, task, 0, 0);

	/*
	 * The verifier must not learn the slot bitmap as a constant and branch on it: it would then
	 * track every combination of slots separately. So the bitmap is only combined
	 * arithmetically, and the predicate runs whenever some slot could match.
	 */
	/* No state yet: only chain positions 0 can match. */
	if (!st && !fi->first)
		return 0;
	/*
	 * One call site: a static subprogram is verified once per call site, and the spliced
	 * predicate is most of this program's verification.
	 */
	int holds = kfault_frame_pred(ctx);
	__u32 want = fi->first;
	if (!st) {
		/* Create the state only when a chain's first frame matched. */
		if (!holds)
			return 0;
		st = bpf_task_storage_get(&kfault_task_chains, task, 0, BPF_LOCAL_STORAGE_GET_F_CREATE_);
		if (!st)
			return 0;
	} else {
		#pragma unroll
		for (int u = 0; u < MAX_FRAME_USERS; u++) {
			struct frame_user *fu = &fi->users[u];
			if ((fu->flags & (FRAME_USER_VALID | FRAME_USER_HAS_PREV)) != (FRAME_USER_VALID | FRAME_USER_HAS_PREV))
				continue;
			struct frame_state *p = &st->f[frame_idx(fu->prev_frame)];
			if (p->gen == fu->prev_gen && p->mask[slot_idx(fu->prev_slot)])
				want |= 1u << u;
		}
		if (!holds)
			want = 0;
	}

	struct frame_state *fs = &st->f[frame_idx(frame_id)];
	if (fs->gen != gen) {
		fs->gen = gen;
		fs->calls = 0;
		#pragma unroll
		for (int u = 0; u < MAX_FRAME_USERS; u++)
			fs->mask[u] = 0;
	}
	__u32 level = fs->calls;
	fs->calls = level + 1;
	if (level < MAX_FRAME_LEVELS) {
		__u32 bit = 1u << level;
		#pragma unroll
		for (int u = 0; u < MAX_FRAME_USERS; u++)
			fs->mask[u] |= bit & -((want >> u) & 1u);
	}
	return 0;
}

/*
 * No scope check here (see Scope above): a task without state pays the task-storage lookup only,
 * and a task with state undoes its entry wherever it is now.
 */
SEC("fexit/d_alloc_parallel")
int kfault_frame_exit(__u64 *ctx)
{
	__u32 key = frame_id;
	struct task_chains *st = bpf_task_storage_get(&kfault_task_chains, bpf_get_current_task_btf(), 0, 0);
	if (!st)
		return 0;
	struct frame_info *fi = bpf_map_lookup_elem(&kfault_frames, &key);
	if (!fi)
		return 0;
	struct frame_state *fs = &st->f[frame_idx(frame_id)];
	__u32 calls = fs->calls;
	/* calls 0: an invocation entered before this task had state, or before the attach. */
	if (fs->gen != fi->gen || !calls)
		return 0;
	__u32 level = calls - 1;
	fs->calls = level;
	if (level < MAX_FRAME_LEVELS) {
		__u32 keep = ~(1u << level);
		#pragma unroll
		for (int u = 0; u < MAX_FRAME_USERS; u++)
			fs->mask[u] &= keep;
	}
	return 0;
}

#endif
