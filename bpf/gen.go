package bpf

// The hot-path programs are compiled with clang by bpf2go; its output (kfault_x86_bpfel.go and
// .o) is committed, so building kfault needs no clang. Regenerate after editing kfault.bpf.c:
//
//	go generate ./bpf
//
//go:generate go run github.com/cilium/ebpf/cmd/bpf2go -target amd64 -type rule_key -type rule_set -type rule -type rule_dev -type event -type frame_user -type frame_info -type chain_frame -type chain -type frame_scope_key -type pending_key -type pending -cflags "-O2 -g -Wall -Werror -mcpu=v3" kfault kfault.bpf.c
//
// The same hot path without call chains, for kernels without task storage (before 5.11): no
// frame programs, no per-task state, no bpf_task_storage_get.
//
//go:generate go run github.com/cilium/ebpf/cmd/bpf2go -target amd64 -cflags "-O2 -g -Wall -Werror -mcpu=v3 -DKFAULT_NO_CHAINS" kfaultNoChains kfault.bpf.c
