# Shared settings for the VM harness. Sourced, not run.
# Everything slow is cached under $KFAULT_CACHE, keyed by its inputs.

VM_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd "$VM_DIR/../.." && pwd)
KFAULT_CACHE=${KFAULT_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/kfault}

# Pinned versions of what runs inside the VM.
CONTAINERD_VERSION=${CONTAINERD_VERSION:-v2.2.9}
CRICTL_VERSION=${CRICTL_VERSION:-v1.34.0}
NERDCTL_VERSION=${NERDCTL_VERSION:-v2.1.3}

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

# The build scripts' output contract: standard output carries the result path and nothing else,
# because callers read it with $(...). result_only sends everything else, including what sub-tools
# such as merge_config.sh print, to standard error; result prints the one line.
result_only() { exec 3>&1 1>&2; }
result() { printf '%s\n' "$1" >&3; }

# build_result SCRIPT [ARGS...] runs a build script and checks its contract: exactly one line on
# standard output, naming a path that exists. It prints that path.
build_result() {
	local out
	out=$("$VM_DIR/$1" "${@:2}") || die "$1 ${*:2} failed"
	[[ $out != *$'\n'* ]] || die "$1 ${*:2} printed more than one line on stdout (the contract is one path): $(printf %q "$out")"
	[[ -e $out ]] || die "$1 ${*:2} printed '$out', which does not exist"
	printf '%s\n' "$out"
}

# cache_lock NAME serialises builders of one cache entry: a second `build-tools` (say, from a
# `test/vm/run` started while the first still builds) waits and then finds the result cached,
# instead of both writing the same .tmp directory. The lock is held until the script exits.
cache_lock() {
	mkdir -p "$KFAULT_CACHE"
	exec 8>"$KFAULT_CACHE/.lock-$1"
	if ! flock -n 8; then
		log "$1: another build of it is running; waiting for it"
		flock 8
	fi
}

# kernel_series VARIANT prints the kernel series a built variant is made from: Debian's
# linux-source-<series> package.
kernel_series() {
	case $1 in
	default | fmodret) echo 6.1 ;;
	built-6.12) echo 6.12 ;;
	*) die "unknown kernel variant $1 (built: default, fmodret, built-6.12; distro: debian-6.1, debian-6.12)" ;;
	esac
}

# kernel_source_version [SERIES] prints the Debian package version of linux-source-SERIES (6.1).
kernel_source_version() {
	dpkg-query -W -f='${Version}' "linux-source-${1:-6.1}" 2>/dev/null || echo unknown
}

# kernel_cache_dir VARIANT prints the cache directory of one kernel variant. The key covers the
# source version, the config fragment, the variant's extra lines and the build recipe.
kernel_cache_dir() {
	local variant=$1 key series
	series=$(kernel_series "$variant") || exit 1
	key=$( {
		# 6.1's key predates the series; keeping it keeps existing caches valid.
		if [[ $series == 6.1 ]]; then kernel_source_version; else kernel_source_version "$series"; fi
		cat "$VM_DIR/kernel.config"
		variant_fragment "$variant"
		sed -n '/# recipe:start/,/# recipe:end/p' "$VM_DIR/build-kernel"
	} | sha256sum | cut -c1-16)
	echo "$KFAULT_CACHE/kernel/$variant-$key"
}

# variant_fragment VARIANT prints the config lines a variant adds over kernel.config.
variant_fragment() {
	case $1 in
	default) ;;
	fmodret) echo '# CONFIG_BPF_KPROBE_OVERRIDE is not set' ;;
	# Since 6.11 should_failslab and should_fail_alloc_page exist only with FAILSLAB and
	# FAIL_PAGE_ALLOC, which kernel.config already sets: 6.12 needs no extra lines.
	built-6.12) ;;
	*) die "unknown kernel variant $1 (built: default, fmodret, built-6.12)" ;;
	esac
}

# kernel_image VARIANT|PATH prints the kernel image test/vm/run boots: a file as given, a distro
# kernel (debian-*) fetched, or a built variant built; each cached.
kernel_image() {
	if [[ -f $1 ]]; then
		echo "$1"
		return
	fi
	case $1 in
	debian-*) build_result fetch-kernel "$1" ;;
	*) build_result build-kernel "$1" ;;
	esac
}

# vm_accel KERNEL prints qemu's -accel value: single-threaded TCG, for every kernel. Multi-threaded
# TCG (qemu's default) runs the two vCPUs in parallel, and kernels die or hang now and then in
# their text patching (a vCPU still runs a breakpoint the patching has removed): our built 6.12
# with "Oops: int3" in 2 of about 12 boots, Debian's 6.12 with "Fatal exception in interrupt" once
# in CI, and our built 6.1 hung silently (no console output, the guest's own watchdog never ran)
# in CI once and twice in about 20 runs of the nerdctl tests, each time while programs were being
# attached. Single-threaded TCG takes turns between the vCPUs and never showed either.
vm_accel() {
	echo tcg,thread=single
}

# tools_cache_dir prints where the pinned Go-built tools live.
tools_cache_dir() {
	echo "$KFAULT_CACHE/tools/containerd-$CONTAINERD_VERSION-crictl-$CRICTL_VERSION-nerdctl-$NERDCTL_VERSION-$(go env GOVERSION 2>/dev/null || echo go)"
}

# kubelet_cache_dir prints where the pinned kubelet lives: keyed by its wrapper module
# (test/vm/kubelet/go.mod and go.sum pin every module it is built from) and the Go version.
kubelet_cache_dir() {
	local key
	key=$(cat "$VM_DIR/kubelet/go.mod" "$VM_DIR/kubelet/go.sum" "$VM_DIR/build-kubelet" | sha256sum | cut -c1-16)
	echo "$KFAULT_CACHE/tools/kubelet-$(kubelet_version)-$key-$(go env GOVERSION 2>/dev/null || echo go)"
}

# kubelet_version prints the pinned k8s.io/kubernetes version (test/vm/kubelet/go.mod).
kubelet_version() {
	awk '$1 == "k8s.io/kubernetes" && $2 ~ /^v/ {print $2; exit}' "$VM_DIR/kubelet/go.mod"
}
