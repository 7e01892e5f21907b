/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * The exec boundary, included by kfault.bpf.c after armed_ancestors.
 *
 * A rule armed with the exec boundary (RULE_EXEC) fires only for tasks that are "eligible": tasks
 * that executed a program (execve) while in a cgroup armed with such a rule, and the tasks they
 * fork afterwards. When the plugin arms a container before its process runs the container's
 * program (NRI StartContainer), the runtime's init is already in the container's cgroup and still
 * has setup steps to do (runc opens /proc/self/fd, the exec fifo, ...) before it execs the
 * entrypoint: that setup is not the container's code and must not be faulted. Its execve into the
 * entrypoint makes it eligible; so does every later exec into the container (kubectl exec: the
 * runtime forks a setup process outside the container, which joins the cgroup and then execs the
 * command; only the command is faulted). No process name is looked at: a container process that
 * renames itself is faulted all the same, and any runtime that ends in an execve works the same.
 *
 * Two programs, attached by the engine only while some rule with the exec boundary is armed:
 *   tp_btf/sched_process_exec: the current task (the one that exec'd) in the scope of such a rule
 *     (same check as the hooks: armed_ancestors over kfault_exec_levels / kfault_exec_scope)
 *     becomes eligible. A task outside pays one array lookup and, when something is armed at
 *     its cgroup levels, one hash lookup per armed level.
 *   tp_btf/sched_process_fork: the child of an eligible parent is eligible (a process that forks
 *     without exec, or a new thread, stays under the faults). An ineligible parent pays one
 *     lookup.
 * Eligibility outlives a cgroup move and the detach of the programs: it belongs to the task.
 *
 * Storage: with task storage (5.11+, the object with call chains) a task-storage map, freed with
 * the task. Without (KFAULT_NO_CHAINS): a hash map keyed by thread id, and a third program,
 * tp_btf/sched_process_exit, that deletes the exiting thread's entry (the engine also empties the
 * map when it detaches the programs, so that a reused thread id never inherits a stale entry).
 * A full hash map leaves a new task ineligible: the error is towards fewer faults.
 */
#ifndef KFAULT_EXEC_BPF_H
#define KFAULT_EXEC_BPF_H

#define MAX_EXEC_SCOPES 16384 /* cgroups armed with the exec boundary at once */
#define MAX_EXEC_TASKS 65536  /* eligible threads at once, without task storage */

struct ns_common {
	unsigned int inum;
} __attribute__((preserve_access_index));

struct mnt_namespace {
	struct ns_common ns;
} __attribute__((preserve_access_index));

struct nsproxy {
	struct mnt_namespace *mnt_ns;
} __attribute__((preserve_access_index));

struct task_struct {
	int pid;
	struct nsproxy *nsproxy;
} __attribute__((preserve_access_index));

/* Bitmap of the cgroup levels with a rule armed with the exec boundary (one entry). */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} kfault_exec_levels SEC(".maps");

/* cgroup id -> number of rules armed with the exec boundary on that cgroup. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MAX_EXEC_SCOPES);
	__type(key, __u64);
	__type(value, __u32);
} kfault_exec_scope SEC(".maps");

/*
 * cgroup id -> the mount namespace (inode number) of the task that made the cgroup, for the
 * cgroups the kernel armed as they were made (kfault_pending.bpf.h). There the boundary is in
 * scope from the mkdir on, before the runtime's own setup is over, and runc re-executes itself
 * (from a memfd) once it is in the cgroup: an exec in the mount namespace the cgroup was made
 * from is the runtime's, not the container's, whose program runs in a mount namespace of its
 * own (as does a later exec into it, which joins it first). No name is looked at.
 */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MAX_EXEC_SCOPES);
	__type(key, __u64);
	__type(value, __u32);
} kfault_exec_runtime_ns SEC(".maps");

/* current_mnt_ns is the inode number of the current task's mount namespace (0: unknown). */
static __always_inline __u32 current_mnt_ns(void)
{
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	struct nsproxy *nsp = 0;
	struct mnt_namespace *mnt = 0;
	__u32 inum = 0;
	if (CORE_READ_INTO(&nsp, task->nsproxy) || !nsp)
		return 0;
	if (CORE_READ_INTO(&mnt, nsp->mnt_ns) || !mnt)
		return 0;
	CORE_READ_INTO(&inum, mnt->ns.inum);
	return inum;
}

#ifndef KFAULT_NO_CHAINS
/* bpf_task_storage_get, bpf_get_current_task_btf: kfault_chain.bpf.h */
struct {
	__uint(type, BPF_MAP_TYPE_TASK_STORAGE_);
	__uint(map_flags, BPF_F_NO_PREALLOC_);
	__type(key, int);
	__type(value, __u32);
} kfault_exec_tasks SEC(".maps");
#else
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MAX_EXEC_TASKS);
	__type(key, __u32);
	__type(value, __u32);
} kfault_exec_tasks SEC(".maps");
#endif

/* kfault_task_eligible: the current task is past the exec boundary. */
static __always_inline int kfault_task_eligible(void)
{
#ifndef KFAULT_NO_CHAINS
	return bpf_task_storage_get(&kfault_exec_tasks, bpf_get_current_task_btf(), 0, 0) != 0;
#else
	__u32 tid = (__u32)bpf_get_current_pid_tgid();
	return bpf_map_lookup_elem(&kfault_exec_tasks, &tid) != 0;
#endif
}

/*
 * The per-level check of armed_ancestors for the exec program (a global function, verified
 * once): the cgroup id when it is in scope (ids are below 2^63), else 0.
 */
__attribute__((noinline)) __s64 kfault_exec_scoped(__u64 cgroup, __u64 unused)
{
	return bpf_map_lookup_elem(&kfault_exec_scope, &cgroup) ? (__s64)cgroup : 0;
}

SEC("tp_btf/sched_process_exec")
int kfault_exec(__u64 *ctx)
{
	/* sched_process_exec(struct task_struct *p, pid_t old_pid, struct linux_binprm *bprm); p is current */
	__u32 zero = 0;
	__u64 *levels = bpf_map_lookup_elem(&kfault_exec_levels, &zero);
	__s64 scoped = 0;
	if (!levels || !armed_ancestors(*levels, kfault_exec_scoped, 0, &scoped))
		return 0;
	__u64 cgroup = (__u64)scoped;
	__u32 *runtime_ns = bpf_map_lookup_elem(&kfault_exec_runtime_ns, &cgroup);
	if (runtime_ns && *runtime_ns == current_mnt_ns())
		return 0; /* the runtime's own exec (kfault_exec_runtime_ns) */
#ifndef KFAULT_NO_CHAINS
	bpf_task_storage_get(&kfault_exec_tasks, bpf_get_current_task_btf(), 0, BPF_LOCAL_STORAGE_GET_F_CREATE_);
#else
	__u32 tid = (__u32)bpf_get_current_pid_tgid();
	__u32 one = 1;
	bpf_map_update_elem(&kfault_exec_tasks, &tid, &one, 0);
#endif
	return 0;
}

SEC("tp_btf/sched_process_fork")
int kfault_fork(__u64 *ctx)
{
	/* sched_process_fork(struct task_struct *parent, struct task_struct *child); current is the parent */
	if (!kfault_task_eligible())
		return 0;
	struct task_struct *child = (struct task_struct *)ctx[1];
#ifndef KFAULT_NO_CHAINS
	bpf_task_storage_get(&kfault_exec_tasks, child, 0, BPF_LOCAL_STORAGE_GET_F_CREATE_);
#else
	__u32 tid = child->pid;
	__u32 one = 1;
	bpf_map_update_elem(&kfault_exec_tasks, &tid, &one, 0);
#endif
	return 0;
}

#ifdef KFAULT_NO_CHAINS
SEC("tp_btf/sched_process_exit")
int kfault_exit(__u64 *ctx)
{
	/* sched_process_exit(struct task_struct *p): p is current, one call per exiting thread */
	__u32 tid = (__u32)bpf_get_current_pid_tgid();
	bpf_map_delete_elem(&kfault_exec_tasks, &tid);
	return 0;
}
#endif

#endif
