package plugin

import (
	"context"
	"fmt"
	"time"

	apievents "github.com/containerd/containerd/api/events"
	"github.com/kfault/kfault/annotations"
)

// Non-CRI containers (nerdctl, ctr) get no NRI events: containerd registers only the CRI
// domain with NRI. kfault follows them on containerd's event stream instead:
//
//	/containers/create  arm by cgroup path (the cgroup does not exist yet): the kernel arms
//	                    the cgroup as it is made, before the task can run in it
//	/tasks/create       arm, or find the cgroup armed by path (pid from the event,
//	                    annotations from the OCI spec)
//	/tasks/exit         disarm, when the init process exits (ID == ContainerID)
//	/tasks/delete       disarm
//	/containers/delete  disarm and forget
//
// nerdctl starts the task right after creating it, so arming on the task's create event
// raced with the start (its first instructions could run unfaulted). Arming by path at the
// container's create closes that window whenever kfault handles the container's event before
// the runtime makes the cgroup; when it does not, the task's event arms as before.
//
// This file is the event handling, independent of the subscription (containerd.go),
// so that tests feed it fake events.

// Event topics the watcher subscribes to.
const (
	TopicContainerCreate = "/containers/create"
	TopicTaskCreate      = "/tasks/create"
	TopicTaskExit        = "/tasks/exit"
	TopicTaskDelete      = "/tasks/delete"
	TopicContainerDelete = "/containers/delete"
)

// criContainerTypeAnnotation is set by containerd's CRI on every container it makes.
const criContainerTypeAnnotation = "io.kubernetes.cri.container-type"

// nerdctlNameLabel is the container label nerdctl stores the container's name in.
const nerdctlNameLabel = "nerdctl/name"

// ContainerInfo is what the watcher needs from a container's record in containerd.
type ContainerInfo struct {
	Namespace   string
	ID          string
	Labels      map[string]string
	Annotations map[string]string // the OCI spec's annotations
	CgroupsPath string            // the OCI spec's linux.cgroupsPath
	Runtime     string            // containerd's runtime name (io.containerd.runc.v2)
}

// Name is the container's name for logs and metrics: nerdctl's name label, or the ID.
func (c ContainerInfo) Name() string {
	if n := c.Labels[nerdctlNameLabel]; n != "" {
		return n
	}
	return c.ID
}

// TaskInfo is a live task found when (re)connecting.
type TaskInfo struct {
	Namespace   string
	ContainerID string
	Pid         uint32
}

// ContainerSource looks containers and tasks up in containerd. containerdSource is the
// real one; tests use a fake.
type ContainerSource interface {
	Container(ctx context.Context, namespace, id string) (ContainerInfo, error)
	// LiveTasks lists the init processes that are created, running or paused, in every
	// namespace.
	LiveTasks(ctx context.Context) ([]TaskInfo, error)
}

// EventHandler applies containerd events to the plugin.
type EventHandler struct {
	p   *Plugin
	src ContainerSource
}

// NewEventHandler makes the handler for containerd events.
func NewEventHandler(p *Plugin, src ContainerSource) *EventHandler {
	return &EventHandler{p: p, src: src}
}

// eventKey is the state/engine key of a non-CRI container: containerd IDs are unique
// per namespace only.
func eventKey(namespace, id string) string { return namespace + "/" + id }

// Handle applies one decoded event (*apievents.ContainerCreate, TaskCreate, TaskExit,
// TaskDelete or ContainerDelete) from namespace, published at at (zero when unknown): the
// "armed" log line then says how long after the event the fault was armed
// (sinceEventSeconds), which is the window in which a non-CRI container runs unarmed. Other
// events and skipped namespaces are ignored.
func (h *EventHandler) Handle(ctx context.Context, namespace string, event any, at time.Time) {
	if h.p.Config().skipsEventNamespace(namespace) {
		return
	}
	switch ev := event.(type) {
	case *apievents.ContainerCreate:
		h.armTask(ctx, namespace, ev.GetID(), 0, phaseContainerCreate, at)
	case *apievents.TaskCreate:
		h.armTask(ctx, namespace, ev.GetContainerID(), ev.GetPid(), phaseTaskCreate, at)
	case *apievents.TaskExit:
		if ev.GetID() == ev.GetContainerID() {
			h.p.disarm(eventKey(namespace, ev.GetContainerID()), "task exit", false)
		}
	case *apievents.TaskDelete:
		if ev.GetID() == "" || ev.GetID() == ev.GetContainerID() {
			h.p.disarm(eventKey(namespace, ev.GetContainerID()), "task delete", false)
		}
	case *apievents.ContainerDelete:
		h.p.disarm(eventKey(namespace, ev.GetID()), "container delete", true)
	}
}

// armTask arms a task's container if its OCI spec carries a kfault annotation.
func (h *EventHandler) armTask(ctx context.Context, namespace, id string, pid uint32, ph phase, at time.Time) {
	p := h.p
	info, err := h.src.Container(ctx, namespace, id)
	if err != nil {
		p.log.Error("containerd: cannot load container", "namespace", namespace, "containerID", id, "error", err.Error())
		return
	}
	if info.Annotations[criContainerTypeAnnotation] != "" {
		// A CRI container in a namespace that is not skipped: NRI arms it; arming it
		// here too would double every fault.
		return
	}
	_ = p.admitContainer(container{
		key:         eventKey(namespace, id),
		id:          ident{Source: SourceContainerd, Namespace: namespace, Container: info.Name(), ContainerID: id},
		annotations: info.Annotations, pid: int(pid), cgroupsPath: info.CgroupsPath, eventTime: at,
		runtime: info.Runtime,
		// No pod: the container ID is the percent draw's identity (a new container draws
		// anew, as a new pod does), and the name (nerdctl's, e.g. compose's proj-web-2) holds
		// the ordinal.
		who: annotations.Target{UID: id, Name: info.Name()},
	}, ph)
}

// Sync arms every live annotated task not armed yet and forgets non-CRI containers
// that are gone. The watcher calls it after each (re)subscription, so that events
// missed while disconnected are made up for.
func (h *EventHandler) Sync(ctx context.Context) error {
	p := h.p
	tasks, err := h.src.LiveTasks(ctx)
	if err != nil {
		return fmt.Errorf("containerd: listing tasks: %w", err)
	}
	live := map[string]bool{}
	for _, t := range tasks {
		if p.Config().skipsEventNamespace(t.Namespace) {
			continue
		}
		key := eventKey(t.Namespace, t.ContainerID)
		live[key] = true
		if !p.isArmed(key) {
			h.armTask(ctx, t.Namespace, t.ContainerID, t.Pid, phaseSync, time.Time{})
		}
	}
	p.forgetGone(SourceContainerd, live, "gone at sync")
	return nil
}
