package supervisor

import (
	"math"
	"slices"
)

// Election statuses, as the census reports them (census::ElectionStatus upstream).
const (
	ElectionNone       = "None"
	ElectionInProgress = "ElectionInProgress"
	ElectionNoQuorum   = "ElectionNoQuorum"
	ElectionFinished   = "ElectionFinished"
)

// Election is one service group's election as a member holds it: butterfly's election
// rumor (rumor/election.rs), a candidate with its suitability and the members that voted
// for it, plus the leader of the last finished term for the census.
//
// The vote follows server.rs: a member that sees its leader Confirmed (or, as the leader,
// loses quorum) starts a new term with itself as candidate; a member that hears of a new
// term from its current leader starts its own to merge; of two candidates in a term the
// more suitable stands (then the larger id) and takes the other's votes; the candidate
// finishes the term once it holds the vote of every alive member of the group. So no
// term finishes before every alive member put its suitability in.
type Election struct {
	Group  string `json:"group"`
	Term   uint64 `json:"term"`
	Status string `json:"status"`
	// LeaderID is the leader of the last finished term, kept while a new one runs, as the
	// census keeps it (only the status says it no longer holds).
	LeaderID string `json:"leader_id,omitempty"`
	// Candidate is who this term's votes go to (the rumor's member_id upstream); for a
	// finished term, the leader.
	Candidate string `json:"candidate,omitempty"`
	// Suitability is the candidate's, as it put it in when it started its term.
	Suitability uint64   `json:"suitability,omitempty"`
	Votes       []string `json:"votes,omitempty"`

	// noQuorum is local: a follower holding a finished term whose view of the group lost
	// quorum. The census reports ElectionNoQuorum; the term stands if quorum comes back
	// while its leader is alive.
	noQuorum bool
}

// Shown is the status the census reports.
func (e Election) Shown() string {
	if e.noQuorum {
		return ElectionNoQuorum
	}
	if e.Status == "" {
		return ElectionNone
	}
	return e.Status
}

// member is the rumor's member_id: the candidate of a running term, the leader of a
// finished one.
func (e Election) member() string { return e.Candidate }

func (e Election) finished() bool { return e.Status == ElectionFinished }

// vote is the local member starting term for group: itself as candidate, its own vote.
func vote(group string, term uint64, self string, suitability uint64, hasQuorum bool, leader string) Election {
	e := Election{Group: group, Term: term, Status: ElectionInProgress, LeaderID: leader, Candidate: self,
		Suitability: suitability, Votes: []string{self}}
	if !hasQuorum {
		e.Status = ElectionNoQuorum
	}
	return e
}

// merge folds rumor r into the stored election e as butterfly's Election::merge does
// and reports whether e changed.
func (e Election) merge(r Election) (Election, bool) {
	switch {
	case e.Term == r.Term && e.Status == r.Status && e.Candidate == r.Candidate && slices.Equal(e.Votes, r.Votes):
		return e, false
	case r.Term >= e.Term && r.finished():
		r.LeaderID, r.noQuorum = r.Candidate, false
		return r, true
	case r.Term == e.Term && e.finished():
		return e.stealVotes(r), false // a finished term changes no more
	case e.Term > r.Term:
		return e, true // keep sharing the newer term
	case better(e.Suitability, e.Candidate, r.Suitability, r.Candidate):
		return e.stealVotes(r), true
	default:
		r.LeaderID = e.LeaderID
		return r.stealVotes(e), true
	}
}

func (e Election) stealVotes(o Election) Election {
	votes := slices.Clone(e.Votes)
	for _, v := range o.Votes {
		if !slices.Contains(votes, v) {
			votes = append(votes, v)
		}
	}
	e.Votes = votes
	return e
}

// better orders candidates as butterfly's Election::merge does: the higher suitability,
// then the greater member id.
func better(suitA uint64, idA string, suitB uint64, idB string) bool {
	if suitA != suitB {
		return suitA > suitB
	}
	return idA > idB
}

// electorate is the alive members of the group in this view (server.rs
// get_electorate_rsr_mlr: Alive only, a suspect does not vote).
func electorate(members []Member, group string) []string {
	var ids []string
	for _, m := range members {
		if m.ServiceGroup() == group && m.Health == Alive {
			ids = append(ids, m.ID)
		}
	}
	return ids
}

// ballot is one member's election: its id, its view of the members and its
// suitability hook (asked only when it starts a term).
type ballot struct {
	self        string
	members     []Member
	suitability func() uint64
}

func (b ballot) quorum(group string) bool { return quorumOf(b.members, group).Has() }

func (b ballot) health(id string) (Health, bool) {
	for _, m := range b.members {
		if m.ID == id {
			return m.Health, true
		}
	}
	return Departed, false
}

// start is the local member starting term: the leader of the last one puts in the
// highest suitability (server.rs restart_elections, start_election).
func (b ballot) start(e Election, term uint64) Election {
	suit := uint64(math.MaxUint64)
	if e.member() != b.self || e.Status == ElectionNone {
		suit = b.suitability()
	}
	return vote(e.Group, term, b.self, suit, b.quorum(e.Group), e.LeaderID)
}

// receive takes an election rumor about the local member's group (server.rs
// insert_election_rsw_mlr_rhw_msr) and reports whether the stored election changed. A
// member with no election yet starts one to merge into; a new term is taken only from the
// current leader or candidate, or by that leader itself, and is otherwise ignored (as
// upstream warns "Received a New Term Election, but not from the current leader").
func (b ballot) receive(e, r Election) (Election, bool) {
	switch {
	case e.Status == ElectionNone && !r.finished():
		e = b.start(e, r.Term)
	case e.Status == ElectionNone:
	case r.Term > e.Term && (e.member() == b.self || r.member() == e.member()):
		e = b.start(e, r.Term)
	case r.Term > e.Term:
		return e, false
	}
	e, changed := e.merge(r)
	if !e.finished() {
		e.Status = ElectionInProgress
		if !b.quorum(e.Group) {
			e.Status = ElectionNoQuorum
		}
	}
	return e, changed
}

// tick advances the local member's election once from its view of the members and
// reports whether it changed (and must be gossiped):
//   - with no election yet and a quorum, the member starts term 1 (a lone member has a
//     quorum of one and elects itself: a ring split in two elects two);
//   - a finished term is restarted when its leader is Confirmed or gone, or when this
//     member is the leader and lost quorum (server.rs elections_to_restart); a follower
//     that lost quorum shows ElectionNoQuorum and keeps the term;
//   - a running term follows quorum (InProgress or NoQuorum), and its candidate, if
//     that is this member, finishes it once every alive member of the group voted.
func (b ballot) tick(e Election) (Election, bool) {
	q := b.quorum(e.Group)
	switch e.Status {
	case ElectionNone:
		if !q {
			return e, false
		}
		return b.start(e, e.Term+1), true
	case ElectionFinished:
		h, ok := b.health(e.LeaderID)
		if !ok || h >= Confirmed || (e.LeaderID == b.self && !q) {
			return b.start(e, e.Term+1), true
		}
		e.noQuorum = !q
		return e, false
	}
	status := ElectionInProgress
	if !q {
		status = ElectionNoQuorum
	}
	changed := status != e.Status
	e.Status = status
	if q && e.Candidate == b.self {
		voters := electorate(b.members, e.Group)
		if !slices.ContainsFunc(voters, func(id string) bool { return !slices.Contains(e.Votes, id) }) {
			e.Status, e.LeaderID = ElectionFinished, b.self
			return e, true
		}
	}
	return e, changed
}
