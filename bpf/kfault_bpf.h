/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * The few BPF definitions the kfault hot path needs, declared by hand so that the build needs
 * neither libbpf headers nor a generated vmlinux.h. Helper numbers are the kernel UAPI's
 * (include/uapi/linux/bpf.h, __BPF_FUNC_MAPPER); they never change.
 */
#ifndef KFAULT_BPF_H
#define KFAULT_BPF_H

typedef unsigned char __u8;
typedef unsigned int __u32;
typedef unsigned long long __u64;
typedef signed long long __s64;

#define SEC(name) __attribute__((section(name), used))
#define __always_inline inline __attribute__((always_inline))

/* BTF-defined maps, as understood by every loader. */
#define __uint(name, val) int (*name)[val]
#define __type(name, val) typeof(val) *name

enum {
	BPF_MAP_TYPE_HASH = 1,
	BPF_MAP_TYPE_ARRAY = 2,
	BPF_MAP_TYPE_RINGBUF = 27,
};

/* Helpers, by their stable UAPI number. */
static void *(*bpf_map_lookup_elem)(void *map, const void *key) = (void *)1;
static long (*bpf_map_update_elem)(void *map, const void *key, const void *value, __u64 flags) = (void *)2;
static long (*bpf_map_delete_elem)(void *map, const void *key) = (void *)3;
static __u64 (*bpf_ktime_get_ns)(void) = (void *)5;
static __u32 (*bpf_get_prandom_u32)(void) = (void *)7;
static __u32 (*bpf_get_smp_processor_id)(void) = (void *)8;
static __u64 (*bpf_get_current_pid_tgid)(void) = (void *)14;
static __u64 (*bpf_get_current_task)(void) = (void *)35;
static long (*bpf_get_current_comm)(void *buf, __u32 size_of_buf) = (void *)16;
static long (*bpf_override_return)(void *regs, __u64 rc) = (void *)58;
static __u64 (*bpf_get_current_cgroup_id)(void) = (void *)80;
static long (*bpf_probe_read_kernel)(void *dst, __u32 size, const void *unsafe_ptr) = (void *)113;
static long (*bpf_probe_read_kernel_str)(void *dst, __u32 size, const void *unsafe_ptr) = (void *)115;
static __u64 (*bpf_get_current_ancestor_cgroup_id)(int ancestor_level) = (void *)123;
static long (*bpf_ringbuf_output)(void *ringbuf, void *data, __u64 size, __u64 flags) = (void *)130;

/*
 * x86-64 struct pt_regs as a kprobe program sees it (arch/x86/include/asm/ptrace.h).
 * Only the argument registers are used.
 */
struct pt_regs {
	unsigned long r15, r14, r13, r12, bp, bx, r11, r10, r9, r8;
	unsigned long ax, cx, dx, si, di, orig_ax, ip, cs, flags, sp, ss;
};

#define PARM1(regs) ((regs)->di)
#define PARM2(regs) ((regs)->si)

/*
 * CO-RE: a probe read whose field offsets are relocated against the running kernel's BTF at
 * load time (the struct types below carry preserve_access_index).
 */
#define CORE_READ_INTO(dst, expr) \
	bpf_probe_read_kernel((dst), sizeof(*(dst)), __builtin_preserve_access_index(&(expr)))
#define CORE_FIELD_EXISTS(expr) __builtin_preserve_field_info((expr), 2 /* BPF_FIELD_EXISTS */)

#endif
