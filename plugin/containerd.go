package plugin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	tasksapi "github.com/containerd/containerd/api/services/tasks/v1"
	tasktypes "github.com/containerd/containerd/api/types/task"
	"github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/typeurl/v2"
	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// containerdSource is ContainerSource over a containerd client.
type containerdSource struct{ cl *client.Client }

func (s containerdSource) Container(ctx context.Context, namespace, id string) (ContainerInfo, error) {
	ctx = namespaces.WithNamespace(ctx, namespace)
	c, err := s.cl.ContainerService().Get(ctx, id)
	if err != nil {
		return ContainerInfo{}, err
	}
	info := ContainerInfo{Namespace: namespace, ID: id, Labels: c.Labels, Runtime: c.Runtime.Name}
	if c.Spec != nil {
		var spec specs.Spec
		if err := json.Unmarshal(c.Spec.GetValue(), &spec); err != nil {
			return ContainerInfo{}, fmt.Errorf("container %s/%s: OCI spec: %w", namespace, id, err)
		}
		info.Annotations = spec.Annotations
		if spec.Linux != nil {
			info.CgroupsPath = spec.Linux.CgroupsPath
		}
	}
	return info, nil
}

func (s containerdSource) LiveTasks(ctx context.Context) ([]TaskInfo, error) {
	nss, err := s.cl.NamespaceService().List(ctx)
	if err != nil {
		return nil, err
	}
	var out []TaskInfo
	for _, ns := range nss {
		resp, err := s.cl.TaskService().List(namespaces.WithNamespace(ctx, ns), &tasksapi.ListTasksRequest{})
		if err != nil {
			return nil, fmt.Errorf("namespace %s: %w", ns, err)
		}
		for _, t := range resp.GetTasks() {
			switch t.GetStatus() {
			case tasktypes.Status_CREATED, tasktypes.Status_RUNNING, tasktypes.Status_PAUSED, tasktypes.Status_PAUSING:
			default:
				continue
			}
			if t.GetID() != "" && t.GetID() != t.GetContainerID() {
				continue
			}
			out = append(out, TaskInfo{Namespace: ns, ContainerID: t.GetContainerID(), Pid: t.GetPid()})
		}
	}
	return out, nil
}

// WatchContainerd follows containerd's event stream at socket until ctx ends, arming
// and disarming non-CRI containers. On connection loss it reconnects with backoff
// (1s doubling to 30s) and re-syncs. It subscribes before syncing, so that nothing
// between the two is lost.
func (p *Plugin) WatchContainerd(ctx context.Context, socket string) {
	_ = p.reconnect(ctx, retry{min: time.Second, max: 30 * time.Second, stable: time.Minute},
		"containerd event stream lost; reconnecting", []any{"socket", socket},
		func() error { return p.watchOnce(ctx, socket) })
}

// dialContainerd connects to containerd; tests replace it with in-memory services.
var dialContainerd = func(socket string) (*client.Client, error) {
	return client.New(socket, client.WithTimeout(5*time.Second))
}

func (p *Plugin) watchOnce(ctx context.Context, socket string) error {
	cl, err := dialContainerd(socket)
	if err != nil {
		return err
	}
	defer cl.Close()
	h := NewEventHandler(p, containerdSource{cl})

	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	ch, errs := cl.Subscribe(sctx,
		`topic=="`+TopicContainerCreate+`"`, `topic=="`+TopicTaskCreate+`"`, `topic=="`+TopicTaskExit+`"`,
		`topic=="`+TopicTaskDelete+`"`, `topic=="`+TopicContainerDelete+`"`)
	if err := h.Sync(ctx); err != nil {
		return err
	}
	p.log.Info("watching containerd events", "socket", socket)
	for {
		select {
		case env, ok := <-ch:
			if !ok {
				return errors.New("event channel closed")
			}
			if env.Event == nil || p.Config().skipsEventNamespace(env.Namespace) {
				continue
			}
			ev, err := typeurl.UnmarshalAny(env.Event)
			if err != nil {
				p.log.Warn("containerd: undecodable event", "topic", env.Topic, "error", err.Error())
				continue
			}
			h.Handle(ctx, env.Namespace, ev, env.Timestamp)
		case err := <-errs:
			if err == nil {
				err = errors.New("subscription ended")
			}
			return err
		case <-ctx.Done():
			return nil
		}
	}
}
