package connlimit

import (
	"container/list"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
)

// Listener wraps a net.Listener (for TLS, the tls.Listener, so that the connections it
// returns are the ones http.Server reports to ConnState). Set the server's ConnState to
// Listener.ConnState.
type Listener struct {
	net.Listener
	max int

	mu sync.Mutex
	// The connections not serving a request, oldest first, are the ones shed at the cap:
	// fresh ones (no request yet: a slow or idle flood) before idle ones (between keep-alive
	// requests: a client's pool, the API server's among them). Active connections are
	// counted in conns but listed in neither.
	fresh, idle *list.List
	conns       map[net.Conn]*tracked
	// Shed counts connections closed to make room (idle or never used); Rejected counts
	// new connections closed because every held one was serving a request.
	shed, rejected atomic.Int64
}

type tracked struct {
	conn net.Conn
	in   *list.List    // fresh or idle; nil while serving a request
	elem *list.Element // its place there
}

// New caps ln at max open connections (max >= 1).
func New(ln net.Listener, max int) *Listener {
	return &Listener{Listener: ln, max: max, fresh: list.New(), idle: list.New(), conns: make(map[net.Conn]*tracked, max)}
}

// Accept returns the next connection, making room for it at the cap.
func (l *Listener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		l.mu.Lock()
		var victim net.Conn
		if len(l.conns) >= l.max {
			for _, q := range []*list.List{l.fresh, l.idle} {
				if front := q.Front(); front != nil {
					victim = l.remove(front.Value.(*tracked).conn)
					break
				}
			}
		}
		if len(l.conns) >= l.max {
			l.mu.Unlock()
			l.rejected.Add(1)
			_ = c.Close()
			continue
		}
		t := &tracked{conn: c}
		t.move(l.fresh)
		l.conns[c] = t
		l.mu.Unlock()
		if victim != nil {
			l.shed.Add(1)
			_ = victim.Close() // its server goroutine sees the error and reports StateClosed
		}
		return c, nil
	}
}

// ConnState is the http.Server hook that tells the listener which connections serve a
// request right now.
func (l *Listener) ConnState(c net.Conn, state http.ConnState) {
	l.mu.Lock()
	defer l.mu.Unlock()
	t, ok := l.conns[c]
	if !ok {
		return // already shed, or not one of ours
	}
	switch state {
	case http.StateActive:
		t.move(nil)
	case http.StateIdle:
		t.move(l.idle)
	case http.StateClosed, http.StateHijacked:
		l.remove(c)
	case http.StateNew:
	}
}

// remove forgets c; the caller holds mu.
func (l *Listener) remove(c net.Conn) net.Conn {
	t, ok := l.conns[c]
	if !ok {
		return nil
	}
	t.move(nil)
	delete(l.conns, c)
	return c
}

// move takes t out of its list and to the back of q (nil: none); the caller holds mu.
func (t *tracked) move(q *list.List) {
	if t.in != nil {
		t.in.Remove(t.elem)
	}
	t.in, t.elem = q, nil
	if q != nil {
		t.elem = q.PushBack(t)
	}
}

// Stats are the listener's counts, for metrics.
type Stats struct {
	Open, Max      int
	Shed, Rejected int64
}

// Stats reports the open connections and what the cap has closed so far.
func (l *Listener) Stats() Stats {
	l.mu.Lock()
	open := len(l.conns)
	l.mu.Unlock()
	return Stats{Open: open, Max: l.max, Shed: l.shed.Load(), Rejected: l.rejected.Load()}
}
