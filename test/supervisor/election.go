package supervisor

import (
	"time"
)

// Election statuses, as the census reports them (census::ElectionStatus upstream).
const (
	ElectionNone       = "None"
	ElectionInProgress = "ElectionInProgress"
	ElectionNoQuorum   = "ElectionNoQuorum"
	ElectionFinished   = "ElectionFinished"
)

// Election is one service group's election as a member knows it. Finished elections are
// gossiped as rumors; a member takes a rumor with a higher term, or, in the same term, a
// finished one over one still running, and of two finished ones the larger leader id.
type Election struct {
	Group    string `json:"group"`
	Term     uint64 `json:"term"`
	Status   string `json:"status"`
	LeaderID string `json:"leader_id,omitempty"`
	// Suitability is the leader's, for a finished election: of two finished ones in a
	// term the better (suitability, leader id) stands.
	Suitability uint64 `json:"suitability,omitempty"`

	started time.Time // local: when this term began running or the group last changed
}

// supersedes says whether rumor r replaces what e holds.
func (r Election) supersedes(e Election) bool {
	switch {
	case r.Term != e.Term:
		return r.Term > e.Term
	case r.Status == ElectionFinished && e.Status != ElectionFinished:
		return true
	case r.Status == ElectionFinished && e.Status == ElectionFinished:
		return better(r.Suitability, r.LeaderID, e.Suitability, e.LeaderID)
	}
	return false
}

// better orders candidates as butterfly's Election::merge does: the higher suitability,
// then the greater member id.
func better(suitA uint64, idA string, suitB uint64, idB string) bool {
	if suitA != suitB {
		return suitA > suitB
	}
	return idA > idB
}

// step advances the local member's election of its group once, from its view of the
// group's members, and returns the election and whether it must be gossiped:
//   - without quorum the status is ElectionNoQuorum (the last leader_id is kept, as the
//     real census keeps it: only the status says it no longer holds);
//   - a finished election stands while its leader is alive or suspect;
//   - otherwise (no election yet, leader confirmed or departed, quorum regained) a new
//     term starts, ElectionInProgress for settle after it starts or the group changes;
//   - then the alive member with the highest suitability wins, of equals the largest id
//     (butterfly's Election::merge). A lone member with a quorum of one elects itself.
func step(e Election, members []Member, changed bool, settle time.Duration, now time.Time) (Election, bool) {
	q := quorumOf(members, e.Group)
	health := map[string]Health{}
	winner, suit := "", uint64(0)
	for _, m := range members {
		if m.ServiceGroup() == e.Group {
			health[m.ID] = m.Health
			if m.Health == Alive && (winner == "" || better(m.Suitability, m.ID, suit, winner)) {
				winner, suit = m.ID, m.Suitability
			}
		}
	}
	if !q.Has() {
		if e.Status != ElectionNoQuorum {
			e.Status = ElectionNoQuorum
		}
		return e, false
	}
	switch e.Status {
	case ElectionFinished:
		if h, ok := health[e.LeaderID]; ok && h <= Suspect {
			return e, false
		}
		e = Election{Group: e.Group, Term: e.Term + 1, Status: ElectionInProgress, LeaderID: e.LeaderID, started: now}
		return e, false
	case ElectionInProgress:
		if changed {
			e.started = now
		}
		if now.Sub(e.started) < settle {
			return e, false
		}
		e.Status, e.LeaderID, e.Suitability = ElectionFinished, winner, suit
		return e, true
	default: // None, or NoQuorum and quorum is back
		return Election{Group: e.Group, Term: e.Term + 1, Status: ElectionInProgress, LeaderID: e.LeaderID, started: now}, false
	}
}
