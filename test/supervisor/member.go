package supervisor

import (
	"cmp"
	"slices"
	"sync"
	"time"
)

// Health is a member's health as butterfly orders it: a rumor is only accepted when it is
// worse than what is known, unless its incarnation is higher (butterfly/src/member.rs).
type Health int

// Member healths, best first.
const (
	Alive Health = iota
	Suspect
	Confirmed
	Departed
)

func (h Health) String() string {
	return [...]string{"alive", "suspect", "confirmed", "departed"}[h]
}

// Member is one member's rumor: who it is, where, what it runs, and how it is.
type Member struct {
	ID          string `json:"id"`
	IP          string `json:"ip"`
	GossipPort  int    `json:"gossip_port"`
	Incarnation uint64 `json:"incarnation"`
	Health      Health `json:"health"`
	Permanent   bool   `json:"permanent"`
	Service     string `json:"service"`
	Group       string `json:"group"`
	Topology    string `json:"topology"`
	Package     string `json:"package"`
	Hostname    string `json:"hostname"`
	// Suitability is the member's answer to its suitability hook when its election last
	// started (math.MaxUint64 for the leader of the previous term), as its election
	// rumor carries it upstream.
	Suitability uint64 `json:"suitability,omitempty"`
	// Cfg is what the member's service exports (pkg_exports): svc.leader.cfg.* elsewhere.
	Cfg map[string]any `json:"cfg,omitempty"`

	since time.Time // when this member's health last changed here (not gossiped)
}

// ServiceGroup is the member's census group.
func (m Member) ServiceGroup() string { return m.Service + "." + m.Group }

// Table is a member's view of the ring: every member it has heard of, itself included.
type Table struct {
	mu      sync.Mutex
	self    string
	members map[string]*Member
	now     func() time.Time
}

// NewTable starts a view holding self.
func NewTable(self Member, now func() time.Time) *Table {
	self.since = now()
	return &Table{self: self.ID, members: map[string]*Member{self.ID: &self}, now: now}
}

// Outcome is what a rumor did to a view.
type Outcome int

// Rumor outcomes.
const (
	// Ignored: the view already knew as much, or better news at the same incarnation.
	Ignored Outcome = iota
	// Changed: the rumor was taken, and is passed on.
	Changed
	// Probe: the rumor says Confirmed about a member this view holds alive or suspect at
	// an incarnation no newer: butterfly does not take it but probes the member first, at
	// the start of its next probe round, and confirms it only when that ping goes
	// unanswered (server.rs insert_member_from_rumor, outbound.rs run_loop).
	Probe
	// Refute: the rumor says the local member is suspect or confirmed: the caller answers
	// it with a higher incarnation.
	Refute
	// Shutdown: the rumor says the local member departed: the real Supervisor stops.
	Shutdown
)

// Merge applies a rumor with butterfly's rules and says what it did.
func (t *Table) Merge(r Member) Outcome { return t.merge(r, true) }

// Confirm takes a Confirmed rumor about a member whose probe went unanswered, by the
// rumor rule alone.
func (t *Table) Confirm(r Member) Outcome {
	r.Health = Confirmed
	return t.merge(r, false)
}

func (t *Table) merge(r Member, probeFirst bool) Outcome {
	t.mu.Lock()
	defer t.mu.Unlock()
	if r.ID == t.self {
		cur := t.members[t.self]
		switch {
		case r.Health == Alive || r.Incarnation < cur.Incarnation:
			return Ignored
		case r.Health == Departed:
			return Shutdown
		default:
			return Refute
		}
	}
	cur, ok := t.members[r.ID]
	if probeFirst && ok && r.Health == Confirmed && cur.Health <= Suspect && r.Incarnation >= cur.Incarnation {
		return Probe
	}
	switch {
	case !ok:
	case r.Incarnation > cur.Incarnation:
	case r.Incarnation == cur.Incarnation && r.Health > cur.Health:
	default:
		return Ignored
	}
	if ok && cur.Health == r.Health && cur.Incarnation == r.Incarnation && cur.IP == r.IP {
		return Ignored
	}
	r.since = t.now()
	if ok && cur.Health == r.Health {
		r.since = cur.since
	}
	t.members[r.ID] = &r
	return Changed
}

// MarkAlive records that a member answered this one directly: it is alive whatever its
// incarnation said (butterfly's mark_sender_alive, insert_member_ignore_incarnation).
// It reports whether the view changed.
func (t *Table) MarkAlive(id string) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	m, ok := t.members[id]
	if !ok || id == t.self || m.Health == Alive {
		return false
	}
	m.Health, m.since = Alive, t.now()
	return true
}

// Get returns the member with id, as this view holds it.
func (t *Table) Get(id string) (Member, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	m, ok := t.members[id]
	if !ok {
		return Member{}, false
	}
	return *m, true
}

// Pingable counts the other members butterfly's probe round visits: alive, suspect, or
// permanent (member.rs pingable).
func (t *Table) Pingable() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	n := 0
	for id, m := range t.members {
		if id != t.self && (m.Health <= Suspect || m.Permanent) {
			n++
		}
	}
	return n
}

// Self returns the local member.
func (t *Table) Self() Member {
	t.mu.Lock()
	defer t.mu.Unlock()
	return *t.members[t.self]
}

// Refute raises the local member's incarnation above a rumor that it is not alive.
func (t *Table) Refute(above uint64) Member {
	t.mu.Lock()
	defer t.mu.Unlock()
	s := t.members[t.self]
	s.Incarnation = max(s.Incarnation, above) + 1
	s.Health = Alive
	return *s
}

// UpdateSelf changes the local member's record and raises its incarnation, so the
// change is taken everywhere, and returns the new record.
func (t *Table) UpdateSelf(f func(*Member)) Member {
	t.mu.Lock()
	defer t.mu.Unlock()
	s := t.members[t.self]
	f(s)
	s.Incarnation++
	return *s
}

// SetSelf replaces the local member's record (for a departure: Health Departed).
func (t *Table) SetSelf(m Member) {
	t.mu.Lock()
	defer t.mu.Unlock()
	m.since = t.now()
	t.members[t.self] = &m
}

// Expire turns members Suspect for longer than suspicion into Confirmed (butterfly's
// suspicion timeout) and members Confirmed for longer than departure into Departed (its
// departure timeout), and returns them, to be gossiped.
func (t *Table) Expire(suspicion, departure time.Duration) []Member {
	t.mu.Lock()
	defer t.mu.Unlock()
	var out []Member
	now := t.now()
	for _, m := range t.members {
		switch {
		case m.ID == t.self:
			continue
		case m.Health == Suspect && now.Sub(m.since) >= suspicion:
			m.Health, m.since = Confirmed, now
		case m.Health == Confirmed && now.Sub(m.since) >= departure:
			m.Health, m.since = Departed, now
		default:
			continue
		}
		out = append(out, *m)
	}
	return out
}

// All returns every member, by id.
func (t *Table) All() []Member {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := make([]Member, 0, len(t.members))
	for _, m := range t.members {
		out = append(out, *m)
	}
	slices.SortFunc(out, func(a, b Member) int { return cmp.Compare(a.ID, b.ID) })
	return out
}

// Others counts the members other than self, whatever their health: butterfly's
// member_list.len(), which decides when to stop pinging initial peers.
func (t *Table) Others() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.members) - 1
}

// Quorum is a service group's quorum as butterfly's check_quorum computes it: alive
// members of the group are more than half of its members that have not departed.
// Confirmed (dead, not departed) members count in the total.
type Quorum struct {
	Alive, Suspect, Confirmed, Departed int
}

// Total is the members that count: all but the departed.
func (q Quorum) Total() int { return q.Alive + q.Suspect + q.Confirmed }

// Has reports whether the group has quorum.
func (q Quorum) Has() bool { return q.Alive > q.Total()/2 }

// QuorumOf counts the members of service group sg by health.
func (t *Table) QuorumOf(sg string) Quorum { return quorumOf(t.All(), sg) }

func quorumOf(members []Member, sg string) Quorum {
	var q Quorum
	for _, m := range members {
		if m.ServiceGroup() != sg {
			continue
		}
		switch m.Health {
		case Alive:
			q.Alive++
		case Suspect:
			q.Suspect++
		case Confirmed:
			q.Confirmed++
		case Departed:
			q.Departed++
		}
	}
	return q
}
