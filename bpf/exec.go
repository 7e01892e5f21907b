package bpf

import (
	"errors"
	"fmt"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
)

// The exec boundary (kfault_exec.bpf.h): a rule armed with ArmOptions.ExecBoundary fires only
// for tasks that exec'd a program inside an armed cgroup, and for what they fork. The engine
// keeps the exec and fork programs (and, without task storage, the exit program) attached while
// some such rule is armed, and their scope maps: the cgroups armed with the boundary, by id and
// by level.

// Fixed capacities; MAX_* in kfault_exec.bpf.h.
const (
	maxExecScopes = 16384 // cgroups armed with the exec boundary at once (kfault_exec_scope)
	maxExecTasks  = 65536 // eligible threads at once without task storage (kfault_exec_tasks)
)

// execPrograms are the exec boundary's programs, in attach order: fork before exec, so that a
// task made eligible at exec never forks a child the fork program misses; the exit program
// exists in the object without task storage only.
var execPrograms = []string{"kfault_exit", "kfault_fork", "kfault_exec"}

// execSet is the engine's exec-boundary bookkeeping (guarded by Engine.mu).
type execSet struct {
	levels, scopeMap, tasks *ebpf.Map // kfault_exec_levels, kfault_exec_scope, kfault_exec_tasks
	// runtimeNS is kfault_exec_runtime_ns, which only the cgroup_mkdir program writes
	// (kfault_pending.bpf.h); the engine deletes a cgroup's entry with its scope.
	runtimeNS *ebpf.Map
	scope     frameScope
	coll      *ebpf.Collection
	links     []link.Link
	idle      idleTimer // the programs' release, while nothing is in scope
}

func (x *execSet) createMaps(spec *ebpf.CollectionSpec) error {
	var err error
	if x.levels, err = ebpf.NewMap(spec.Maps["kfault_exec_levels"]); err != nil {
		return fmt.Errorf("create map kfault_exec_levels: %w", err)
	}
	if x.scopeMap, err = ebpf.NewMap(spec.Maps["kfault_exec_scope"]); err != nil {
		return fmt.Errorf("create map kfault_exec_scope: %w", err)
	}
	if x.tasks, err = ebpf.NewMap(spec.Maps["kfault_exec_tasks"]); err != nil {
		return fmt.Errorf("create map kfault_exec_tasks: %w", err)
	}
	if x.runtimeNS, err = ebpf.NewMap(spec.Maps["kfault_exec_runtime_ns"]); err != nil {
		return fmt.Errorf("create map kfault_exec_runtime_ns: %w", err)
	}
	return nil
}

func (x *execSet) closeMaps() {
	for _, m := range []*ebpf.Map{x.levels, x.scopeMap, x.tasks, x.runtimeNS} {
		if m != nil {
			m.Close()
		}
	}
}

// scopeExec puts t in the exec boundary's scope for one more armed key, attaching the programs
// first when none was in scope. Called before the key's rules are written, so that no exec
// into the cgroup happens between the rules and the scope.
func (e *Engine) scopeExec(t Target) error {
	x := &e.exec
	x.idle.stop()
	if x.coll == nil {
		if err := e.attachExec(); err != nil {
			return err
		}
	}
	newCgroup, newLevel := x.scope.add(t.ID, t.Level)
	var err error
	if newCgroup {
		err = x.scopeMap.Put(t.ID, uint32(1))
	}
	if err == nil && newLevel {
		err = x.levels.Put(uint32(0), x.scope.bits())
	}
	if err != nil {
		e.unscopeExec(t)
		return fmt.Errorf("exec boundary scope: %w", err)
	}
	return nil
}

// unscopeExec undoes scopeExec, retiring the programs when nothing is left in scope.
func (e *Engine) unscopeExec(t Target) {
	x := &e.exec
	goneCgroup, goneLevel := x.scope.remove(t.ID, t.Level)
	if goneLevel {
		if err := x.levels.Put(uint32(0), x.scope.bits()); err != nil {
			e.log.Warn("exec boundary levels", "err", err)
		}
	}
	if goneCgroup {
		if err := x.scopeMap.Delete(t.ID); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			e.log.Warn("exec boundary scope", "cgroup", t.ID, "err", err)
		}
		if err := x.runtimeNS.Delete(t.ID); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			e.log.Warn("exec boundary runtime namespace", "cgroup", t.ID, "err", err)
		}
	}
	if len(x.scope.cgroups) == 0 {
		e.retire(&x.idle, func() bool { return len(x.scope.cgroups) == 0 }, e.detachExec)
	}
}

// attachExec loads and attaches the exec boundary's programs.
func (e *Engine) attachExec() error {
	start := time.Now()
	spec := e.spec.Copy()
	want := map[string]bool{}
	for _, n := range execPrograms {
		want[n] = true
	}
	for n := range spec.Programs {
		if !want[n] {
			delete(spec.Programs, n)
		}
	}
	coll, err := e.loadCollection(spec)
	if err != nil {
		return fmt.Errorf("load the exec boundary programs: %w", err)
	}
	e.exec.coll = coll
	for _, n := range execPrograms {
		prog := coll.Programs[n]
		if prog == nil {
			continue
		}
		l, err := link.AttachTracing(link.TracingOptions{Program: prog, AttachType: ebpf.AttachTraceRawTp})
		if err != nil {
			e.detachExec()
			return fmt.Errorf("attach %s: %w", n, err)
		}
		e.exec.links = append(e.exec.links, l)
	}
	e.log.Info("exec boundary attached", "took", time.Since(start).Round(time.Microsecond).String())
	return nil
}

// detachExec closes the exec boundary's programs. Without task storage it also empties the
// thread-id map, since exits are no longer seen.
func (e *Engine) detachExec() {
	x := &e.exec
	if x.coll == nil {
		return
	}
	for i := len(x.links) - 1; i >= 0; i-- {
		if err := x.links[i].Close(); err != nil {
			e.log.Warn("detach exec boundary", "err", err)
		}
	}
	x.links = nil
	x.coll.Close()
	x.coll = nil
	if x.tasks != nil && x.tasks.Type() == ebpf.Hash {
		var tid uint32
		var keys []uint32
		it := x.tasks.Iterate()
		var v uint32
		for it.Next(&tid, &v) {
			keys = append(keys, tid)
		}
		for _, k := range keys {
			_ = x.tasks.Delete(k)
		}
	}
	e.log.Info("exec boundary detached")
}
