package labeler

import (
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/habring/habring/contract"
)

// Election statuses of a census group (the Supervisor's census::ElectionStatus).
const (
	ElectionNone       = "None"
	ElectionInProgress = "ElectionInProgress"
	ElectionNoQuorum   = "ElectionNoQuorum"
	ElectionFinished   = "ElectionFinished"
)

// ErrAmbiguousGroup means the local member is in several service groups and
// --service-group does not say which one's election to publish.
var ErrAmbiguousGroup = errors.New("local member belongs to several service groups")

// Census is the part of GET /census the labeler reads.
type Census struct {
	LocalMemberID string                 `json:"local_member_id"`
	Groups        map[string]CensusGroup `json:"census_groups"`
}

// CensusGroup is one service group's view of its election.
type CensusGroup struct {
	ElectionStatus string                  `json:"election_status"`
	LeaderID       *string                 `json:"leader_id"`
	Population     map[string]CensusMember `json:"population"` // by member id
}

// CensusMember is the part of a census member the labeler reads.
type CensusMember struct {
	// Alive is the member's health as this Supervisor sees it (false when suspect,
	// confirmed or departed).
	Alive bool `json:"alive"`
	// Suspect, Confirmed (dead, not departed: it still counts in the quorum) and Departed
	// are the member's other healths; exactly one of the four is true.
	Suspect   bool `json:"suspect"`
	Confirmed bool `json:"confirmed"`
	Departed  bool `json:"departed"`
	// Sys.IP is the member's address (--sys-ip-address): which pod it is.
	Sys struct {
		IP string `json:"ip"`
	} `json:"sys"`
}

// Quorum is a service group's members by health, as one Supervisor's census sees them.
type Quorum struct {
	Alive, Suspect, Confirmed, Departed int
}

// Margin is how many more alive members the group can lose and keep its quorum: alive −
// floor(total/2) − 1, where total counts every member not departed (a dead member counts
// until it departs: `hab sup depart`, or 72 hours). Below 0 the group has no quorum and
// elects no leader.
func (q Quorum) Margin() int {
	total := q.Alive + q.Suspect + q.Confirmed
	return q.Alive - total/2 - 1
}

// DepartCommands are the `hab sup depart` commands that clear a group's Confirmed members
// (dead, not departed, still counted in its quorum), sorted.
func DepartCommands(g CensusGroup) []string {
	var out []string
	for id, m := range g.Population {
		if m.Confirmed && !m.Departed {
			out = append(out, "hab sup depart "+id)
		}
	}
	slices.Sort(out)
	return out
}

// QuorumOf counts a group's members by health.
func QuorumOf(g CensusGroup) Quorum {
	var q Quorum
	for _, m := range g.Population {
		switch {
		case m.Departed:
			q.Departed++
		case m.Confirmed:
			q.Confirmed++
		case m.Suspect:
			q.Suspect++
		case m.Alive:
			q.Alive++
		}
	}
	return q
}

// Decide returns the role of the local member in group (or, when group is empty, in the
// one group it belongs to): leader only when the election is finished, leader_id is the
// local member and the local member is alive in the census, as the Supervisor's census
// (habitat-sh/habitat components/sup/src/census.rs) reports it. election_status is
// checked every time because leader_id keeps its old value while a new election runs or
// quorum is lost; aliveness because a Supervisor can still list itself as the winner of
// an election its ring has moved past. It also returns the group it looked at.
func Decide(c *Census, group string) (role, decided string, err error) {
	if group == "" {
		var mine []string
		for name, g := range c.Groups {
			if _, ok := g.Population[c.LocalMemberID]; ok {
				mine = append(mine, name)
			}
		}
		slices.Sort(mine)
		switch len(mine) {
		case 0:
			return contract.RoleNone, "", nil // no service loaded yet
		case 1:
			group = mine[0]
		default:
			return "", "", fmt.Errorf("%w: %s; set --service-group to one of them", ErrAmbiguousGroup, strings.Join(mine, ", "))
		}
	}
	g, ok := c.Groups[group]
	if !ok {
		return contract.RoleNone, group, nil
	}
	if g.ElectionStatus != ElectionFinished {
		return contract.RoleNone, group, nil
	}
	self, member := g.Population[c.LocalMemberID]
	switch {
	case g.LeaderID != nil && *g.LeaderID == c.LocalMemberID && member && self.Alive:
		return contract.RoleLeader, group, nil
	case g.LeaderID != nil && *g.LeaderID == c.LocalMemberID:
		return contract.RoleNone, group, nil // named leader, but not alive (or absent) here
	case member:
		return contract.RoleFollower, group, nil
	}
	return contract.RoleNone, group, nil
}
