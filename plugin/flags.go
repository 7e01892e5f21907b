package plugin

import (
	"flag"
	"time"

	"github.com/containerd/nri/pkg/api"
)

// NRIFlags are the values of the command-line flags of `kfault nri`, the command that
// runs this plugin (cmd/kfault/nri.go). The flags that set node config keys win over
// the config file and the NRI-delivered config when given explicitly.
type NRIFlags struct {
	ConfigFile       string        // --config: node config file (YAML or JSON)
	Socket           string        // --socket: the NRI socket to connect to
	Name             string        // --name: plugin name to register as
	Index            string        // --idx: plugin index to register with
	StateDir         string        // --state-dir (config stateDir)
	Mechanism        string        // --mechanism: auto, fmod_ret or kprobe
	KeepIdle         time.Duration // --keep-idle: bpf.Options.KeepIdle
	Lenient          bool          // --lenient (config mode)
	MetricsAddress   string        // --metrics-address (config metricsAddress)
	ContainerdSocket string        // --containerd-socket (config containerdSocket)
	ControlSocket    string        // --control-socket (config controlSocket)
	LogFile          string        // --log-file
	Debug            bool          // --debug
}

// DefaultKeepIdle is --keep-idle's default: a container restarting, or the next nerdctl run of
// a chaos script, arms the same functions again within it.
const DefaultKeepIdle = time.Minute

// NewFlagSet returns the flag set of `kfault nri` (ContinueOnError) and the NRIFlags it
// parses into. The install tests parse the arguments of the systemd unit and the
// DaemonSet with it.
func NewFlagSet(name string) (*flag.FlagSet, *NRIFlags) {
	var f NRIFlags
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.StringVar(&f.ConfigFile, "config", "", "node config `file` (YAML or JSON)")
	fs.StringVar(&f.Socket, "socket", api.DefaultSocketPath, "NRI socket `path` to connect to")
	fs.StringVar(&f.Name, "name", DefaultPluginName, "plugin `name` to register as")
	fs.StringVar(&f.Index, "idx", DefaultPluginIndex, "plugin `index` to register with (two digits)")
	fs.StringVar(&f.StateDir, "state-dir", DefaultStateDir, "state `directory`")
	fs.StringVar(&f.Mechanism, "mechanism", "auto", "override mechanism: auto, fmod_ret or kprobe")
	fs.DurationVar(&f.KeepIdle, "keep-idle", DefaultKeepIdle, "keep a BPF program whose last fault was disarmed attached, doing nothing, this `long`, so that arming it again loads nothing (0: detach at once); the kernel's BTF is released after as long unused (0: kept)")
	fs.BoolVar(&f.Lenient, "lenient", false, "lenient mode: log bad annotations and arming failures instead of failing the container")
	fs.StringVar(&f.MetricsAddress, "metrics-address", "", "serve Prometheus metrics on `host:port` (loopback)")
	fs.StringVar(&f.ContainerdSocket, "containerd-socket", DefaultContainerdSocket, "containerd `socket` for the event watcher (non-CRI containers)")
	fs.StringVar(&f.ControlSocket, "control-socket", DefaultControlSocket, "control socket `path` for kfault status/disarm, or off")
	fs.StringVar(&f.LogFile, "log-file", "", "append logs to `file` (default: standard error; /var/log/kfault.log when launched by containerd)")
	fs.BoolVar(&f.Debug, "debug", false, "debug logging")
	return fs, &f
}
