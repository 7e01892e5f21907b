package plugin

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"path/filepath"
	"time"

	"github.com/kfault/kfault/bpf"
)

// DefaultControlSocket is where `kfault status` and `kfault disarm` reach the plugin.
const DefaultControlSocket = "/run/kfault/control.sock"

// The control API is HTTP over a unix socket (mode 0600 in a 0700 directory: root
// only):
//
//	GET  /v1/status                      → Status
//	POST /v1/disarm  {"all": true}       → DisarmReply (the emergency stop: Halt)
//	POST /v1/disarm  {"key": "<key>"}    → DisarmReply
//	POST /v1/disarm  {"resume": true}    → DisarmReply (ends a halt)
//	GET  /debug/pprof/...                → the Go runtime's profiles (net/http/pprof)

// Status is what `kfault status` shows.
type Status struct {
	Halted     bool          `json:"halted"`
	Mode       Mode          `json:"mode"`
	StateDir   string        `json:"stateDir"`
	Containers []StatusEntry `json:"containers"`
	// Quotas: per namespace with armed containers or its own quotas, what its armed
	// containers use of the engine and its quotas.
	Quotas []NamespaceQuota `json:"quotas,omitempty"`
}

// StatusEntry is one container with faults: its state entry, with live counts when armed.
type StatusEntry struct {
	Key string `json:"key"`
	Entry
	FaultList []string `json:"faultList"` // one line per armed fault, as parsed
	// NotSelectedList has one line per fault that its select rule left out, with the
	// decision: "<fault> (not selected: fault 0: percent: draw 57.1 >= 30 (...))".
	NotSelectedList []string `json:"notSelectedList,omitempty"`
	// Live says, per fault of the annotation, whether it is armed now (false once its
	// duration has elapsed). Only for armed containers of engines that report it.
	Live []bool `json:"live,omitempty"`
	// Recent are the last sampled injections (engines with a ring buffer), oldest first.
	Recent []bpf.Injection `json:"recent,omitempty"`
}

// DisarmRequest is the body of POST /v1/disarm.
type DisarmRequest struct {
	All    bool   `json:"all,omitempty"`
	Key    string `json:"key,omitempty"`
	Resume bool   `json:"resume,omitempty"`
}

// DisarmReply says what was done.
type DisarmReply struct {
	Disarmed []string `json:"disarmed"`
	Halted   bool     `json:"halted"`
}

// Status reports every container in the state, armed ones with live counts.
func (p *Plugin) Status() Status {
	cfg := p.Config()
	st := Status{Mode: cfg.Mode, StateDir: cfg.StateDir, Containers: []StatusEntry{}}
	store := p.Store()
	if store == nil {
		return st
	}
	st.Halted = store.Halted()
	st.Quotas = p.quotaStatus()
	for _, c := range p.containers() {
		se := StatusEntry{Key: c.key, Entry: c.Entry, Recent: p.inj.get(c.key), Live: c.live}
		for _, f := range c.faults {
			se.FaultList = append(se.FaultList, f.String())
		}
		reasons := c.NotSelectedReasons()
		for i, f := range c.NotSelected {
			line := f.String()
			if i < len(reasons) {
				line += " (not selected: " + reasons[i] + ")"
			}
			se.NotSelectedList = append(se.NotSelectedList, line)
		}
		st.Containers = append(st.Containers, se)
	}
	return st
}

// ControlHandler serves the control API.
func (p *Plugin) ControlHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/status", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, p.Status())
	})
	mux.HandleFunc("POST /v1/disarm", func(w http.ResponseWriter, r *http.Request) {
		var req DisarmRequest
		if err := json.NewDecoder(io.LimitReader(r.Body, 1<<16)).Decode(&req); err != nil {
			writeJSON(w, http.StatusBadRequest, map[string]string{"error": "bad request: " + err.Error()})
			return
		}
		reply := DisarmReply{Disarmed: []string{}}
		switch {
		case req.All:
			reply.Disarmed = append(reply.Disarmed, p.Halt("kfault disarm --all")...)
		case req.Resume:
			p.Resume()
		case req.Key != "":
			if err := p.DisarmKey(req.Key, "kfault disarm"); err != nil {
				writeJSON(w, http.StatusNotFound, map[string]string{"error": err.Error()})
				return
			}
			reply.Disarmed = append(reply.Disarmed, req.Key)
		default:
			writeJSON(w, http.StatusBadRequest, map[string]string{"error": "say all, key or resume"})
			return
		}
		if s := p.Store(); s != nil {
			reply.Halted = s.Halted()
		}
		writeJSON(w, http.StatusOK, reply)
	})
	// The Go runtime's profiles (heap, goroutines, CPU), for finding where kfault's memory goes
	// (make bench reads the heap profile at node scale). The socket is root's only.
	mux.HandleFunc("GET /debug/pprof/", pprof.Index)
	mux.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
	return mux
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

// ServeControl listens on the unix socket path (replacing a stale one) and serves the
// control API until ctx ends.
func (p *Plugin) ServeControl(ctx context.Context, path string) error {
	// A directory created here is 0700; an existing one (e.g. /run) is left alone: the
	// socket's own mode (0600, root's) is what keeps others out.
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return fmt.Errorf("control socket: %w", err)
	}
	if fi, err := os.Lstat(path); err == nil && fi.Mode()&os.ModeSocket != 0 {
		os.Remove(path)
	}
	ln, err := net.Listen("unix", path)
	if err != nil {
		return fmt.Errorf("control socket: %w", err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		return fmt.Errorf("control socket: %w", err)
	}
	srv := &http.Server{Handler: p.ControlHandler(), ReadHeaderTimeout: 5 * time.Second}
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
		os.Remove(path)
	}()
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			p.log.Error("control socket stopped", "path", path, "error", err.Error())
		}
	}()
	return nil
}

// ControlClient talks to a plugin's control socket.
type ControlClient struct {
	c *http.Client
}

// NewControlClient connects to the control socket at path.
func NewControlClient(path string) *ControlClient {
	return &ControlClient{c: &http.Client{
		Timeout: 10 * time.Second,
		Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", path)
		}},
	}}
}

// Status fetches the status.
func (c *ControlClient) Status() (Status, error) {
	var st Status
	resp, err := c.c.Get("http://kfault/v1/status")
	if err != nil {
		return st, err
	}
	return st, decodeReply(resp, &st)
}

// Disarm sends a disarm request.
func (c *ControlClient) Disarm(req DisarmRequest) (DisarmReply, error) {
	var reply DisarmReply
	body, _ := json.Marshal(req)
	resp, err := c.c.Post("http://kfault/v1/disarm", "application/json", bytes.NewReader(body))
	if err != nil {
		return reply, err
	}
	return reply, decodeReply(resp, &reply)
}

func decodeReply(resp *http.Response, v any) error {
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		var e struct{ Error string }
		if json.Unmarshal(data, &e) == nil && e.Error != "" {
			return errors.New(e.Error)
		}
		return fmt.Errorf("control socket: %s", resp.Status)
	}
	return json.Unmarshal(data, v)
}

// Services starts what the node config asks for besides NRI: the control socket, the
// metrics endpoint and the containerd event watcher. The kfault command passes it as
// Options.StartServices.
func Services(ctx context.Context, p *Plugin, cfg Config) error {
	if !cfg.ControlDisabled() {
		if err := p.ServeControl(ctx, cfg.ControlSocket); err != nil {
			return err
		}
	}
	if cfg.MetricsAddress != "" {
		if err := p.Metrics().Serve(ctx, cfg.MetricsAddress, p.log); err != nil {
			return err
		}
		p.log.Info("serving metrics", "address", cfg.MetricsAddress)
	}
	if cfg.EventsEnabled() {
		go p.WatchContainerd(ctx, cfg.ContainerdSocket)
	}
	return nil
}
