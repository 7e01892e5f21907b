package plugin

import (
	"fmt"

	"github.com/kfault/kfault/annotations"
	"github.com/kfault/kfault/bpf"
)

// Unavailable is the Engine of a node whose kernel cannot inject faults (bpf.NewEngine failed
// with bpf.ErrMechanismUnavailable). The plugin still registers, so that each annotated
// container is refused with the kernel's reason: without a plugin the container would run
// unfaulted and nobody would be told.
type Unavailable struct {
	Err error // why, as bpf.NewEngine said
}

func (u Unavailable) refusal() error {
	return fmt.Errorf("this node's kernel cannot inject faults (`kfault check` on the node says what works there): %w", u.Err)
}

func (u Unavailable) Prepare([]annotations.Fault) (bpf.Plan, error) { return bpf.Plan{}, u.refusal() }
func (u Unavailable) Arm(string, bpf.Target, bpf.Plan, bpf.ArmOptions) error {
	return u.refusal()
}
func (u Unavailable) ArmPending(string, bpf.Target, bpf.Plan, bpf.ArmOptions) error {
	return u.refusal()
}
func (u Unavailable) Retarget(string, bpf.Target) error      { return u.refusal() }
func (Unavailable) Disarm(string) error                      { return nil }
func (Unavailable) Counts(string) ([]uint64, error)          { return nil, nil }
func (Unavailable) Active(string) ([]bool, error)            { return nil, nil }
func (Unavailable) Mechanism() bpf.Mechanism                 { return bpf.MechanismAuto }
func (Unavailable) Injections() <-chan bpf.Injection         { return nil }
func (Unavailable) SamplesDropped() uint64                   { return 0 }
func (Unavailable) SetProtectedDevices(devs []bpf.Dev) error { return nil }
func (Unavailable) ReleaseIdle()                             {}
