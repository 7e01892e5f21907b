/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Arming by cgroup path, included at the end of kfault.bpf.c.
 *
 * A container outside CRI (nerdctl, ctr) gets no NRI events: kfault learns of it from containerd's
 * event stream, and its task create event races with the task's start. Its cgroup path is known
 * earlier, from the OCI spec at container create, before the cgroup exists. The engine then arms
 * the container's rules under a placeholder cgroup id (never a real one: the top bit is set) and
 * writes {path -> pending} here. When the cgroup is made, this program, run by cgroup_mkdir in the
 * mkdir itself and so before the runtime can put a task into the cgroup, copies the placeholder's
 * entries to the new cgroup id: the call-chain frame scopes, the exec boundary's scope, then the
 * rule sets (the order of the engine: a rule is in kfault_rules only once what it depends on is
 * there). The level bits are the engine's already: it armed the placeholder at the path's level.
 * It records the new id in kfault_pending_made. The engine later moves the rules to the real id
 * itself (Engine.Retarget) and deletes the entries.
 *
 * The engine writes the entry twice: first with the exec boundary only, before it loads the
 * programs of the rules (which can take longer than the runtime takes to make the cgroup), then
 * with the rules. A cgroup made in between gets its exec boundary from the first (so the
 * container's program, exec'd later, is in scope), and its rules from the engine, which finds
 * the id in kfault_pending_made when its arm is done.
 *
 * Only mkdir pays: one string read and one hash lookup per new cgroup while something is pending.
 */
#ifndef KFAULT_PENDING_BPF_H
#define KFAULT_PENDING_BPF_H

#define MAX_PENDING_PATH 256  /* cgroup paths (from the cgroup2 root) kfault can arm by */
#define MAX_PENDING 1024      /* paths pending at once */
#ifndef BPF_F_NO_PREALLOC_
#define BPF_F_NO_PREALLOC_ 1
#endif

struct pending_key {
	char path[MAX_PENDING_PATH]; /* as the cgroup_mkdir tracepoint gives it, NUL-padded */
};

struct pending {
	__u64 placeholder; /* the cgroup id the rules are armed under until the cgroup exists */
	__u64 hooks;       /* bitmap of the hook ids with a rule set under placeholder */
	__u64 frames;      /* bitmap of the frame ids (call chains) with placeholder in their scope */
	__u32 level;       /* the cgroup's level; a cgroup at another level is not the one */
	__u32 exec;        /* the placeholder is in the exec boundary's scope */
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC_);
	__uint(max_entries, MAX_PENDING);
	__type(key, struct pending_key);
	__type(value, struct pending);
} kfault_pending SEC(".maps");

/* placeholder -> the id of the cgroup made at its path. Only this program writes it: the engine
 * rewrites kfault_pending entries, and would overwrite an id kept there. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC_);
	__uint(max_entries, MAX_PENDING);
	__type(key, __u64);
	__type(value, __u64);
} kfault_pending_made SEC(".maps");

SEC("tp_btf/cgroup_mkdir")
int kfault_cgroup_mkdir(__u64 *ctx)
{
	/* cgroup_mkdir(struct cgroup *cgrp, const char *path) */
	struct cgroup *cgrp = (struct cgroup *)ctx[0];
	struct pending_key key = {};
	if (bpf_probe_read_kernel_str(key.path, sizeof(key.path), (const char *)ctx[1]) <= 0)
		return 0;
	struct pending *p = bpf_map_lookup_elem(&kfault_pending, &key);
	if (!p)
		return 0;
	__u64 ph = p->placeholder;
	/* Only the first cgroup made at the path is armed: a second one (after an rmdir) would
	 * leave the first one's copies behind. Retarget refuses any id but the one recorded here,
	 * and the engine then arms the cgroup the plain way and deletes these copies. */
	if (bpf_map_lookup_elem(&kfault_pending_made, &ph))
		return 0;
	int level = 0;
	struct kernfs_node *kn = 0;
	__u64 id = 0;
	CORE_READ_INTO(&level, cgrp->level);
	CORE_READ_INTO(&kn, cgrp->kn);
	if (!kn || level != (int)p->level)
		return 0;
	CORE_READ_INTO(&id, kn->id);
	if (!id || bpf_map_update_elem(&kfault_pending_made, &ph, &id, 1 /* BPF_NOEXIST */))
		return 0;

#ifndef KFAULT_NO_CHAINS
	/* A bitmap, walked as the hooks below: a loop over an array of ids came out of clang closed
	 * by a fall-through edge, which 6.1's verifier rejects ("back-edge from insn 98 to 99"). */
	__u64 frames = p->frames;
	for (__u32 f = 0; f < MAX_FRAME_IDS && frames; f++, frames >>= 1) {
		if (!(frames & 1))
			continue;
		struct frame_scope_key from = {.cgroup = ph, .frame = f};
		struct frame_scope_key to = {.cgroup = id, .frame = f};
		__u32 *n = bpf_map_lookup_elem(&kfault_frame_scope, &from);
		if (n)
			bpf_map_update_elem(&kfault_frame_scope, &to, n, 0);
	}
#endif
	if (p->exec) {
		/* The mkdir's task is the runtime (or its cgroup manager): its mount namespace is
		 * where the runtime's own execs happen (kfault_exec_runtime_ns). */
		__u32 one = 1, ns = current_mnt_ns();
		if (ns)
			bpf_map_update_elem(&kfault_exec_runtime_ns, &id, &ns, 0);
		bpf_map_update_elem(&kfault_exec_scope, &id, &one, 0);
	}
	__u64 hooks = p->hooks;
	for (__u32 h = 0; h < MAX_HOOKS && hooks; h++, hooks >>= 1) {
		if (!(hooks & 1))
			continue;
		struct rule_key from = {.cgroup = ph, .hook = h};
		struct rule_key to = {.cgroup = id, .hook = h};
		struct rule_set *set = bpf_map_lookup_elem(&kfault_rules, &from);
		if (set)
			bpf_map_update_elem(&kfault_rules, &to, set, 0);
	}
	return 0;
}

#endif
