package labeler

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"

	"github.com/habring/habring/patch"
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
	ElectionStatus string              `json:"election_status"`
	LeaderID       *string             `json:"leader_id"`
	Population     map[string]struct{} `json:"population"` // member id -> (fields unused)
}

// Decide returns the role of the local member in group (or, when group is empty, in the
// one group it belongs to), following ../shared/habitat/README.md: leader only when the
// election is finished and leader_id is the local member. election_status is checked
// every time because leader_id keeps its old value while a new election runs or quorum
// is lost. It also returns the group it looked at.
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
			return patch.RoleNone, "", nil // no service loaded yet
		case 1:
			group = mine[0]
		default:
			return "", "", fmt.Errorf("%w: %s; set --service-group to one of them", ErrAmbiguousGroup, strings.Join(mine, ", "))
		}
	}
	g, ok := c.Groups[group]
	if !ok {
		return patch.RoleNone, group, nil
	}
	if g.ElectionStatus != ElectionFinished {
		return patch.RoleNone, group, nil
	}
	if g.LeaderID != nil && *g.LeaderID == c.LocalMemberID {
		return patch.RoleLeader, group, nil
	}
	if _, ok := g.Population[c.LocalMemberID]; ok {
		return patch.RoleFollower, group, nil
	}
	return patch.RoleNone, group, nil
}

// maxCensusBytes bounds one /census read. A census lists every member of every group
// the Supervisor knows; 8 MiB is thousands of members, far beyond a sane ring.
const maxCensusBytes = 8 << 20

// Gateway reads the Supervisor's HTTP gateway.
type Gateway struct {
	URL    string // e.g. http://127.0.0.1:9631
	Token  string // HAB_SUP_GATEWAY_AUTH_TOKEN, sent as a Bearer token when set
	Client *http.Client
}

// Census fetches and decodes /census. Errors say what to check.
func (g *Gateway) Census(ctx context.Context) (*Census, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimSuffix(g.URL, "/")+"/census", nil)
	if err != nil {
		return nil, fmt.Errorf("census request: %w", err)
	}
	if g.Token != "" {
		req.Header.Set("Authorization", "Bearer "+g.Token)
	}
	resp, err := g.Client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("supervisor gateway: %w", err)
	}
	defer func() { _ = resp.Body.Close() }()
	switch resp.StatusCode {
	case http.StatusOK:
	case http.StatusUnauthorized, http.StatusForbidden:
		return nil, fmt.Errorf("supervisor gateway answered %s: the gateway auth token is missing or wrong (habitat.sh/gateway-auth-secret gives both containers HAB_SUP_GATEWAY_AUTH_TOKEN)", resp.Status)
	case http.StatusNotFound:
		return nil, fmt.Errorf("supervisor gateway answered %s for /census: is the Supervisor running with HAB_FEAT_REDACT_HTTP? the labeler needs /census", resp.Status)
	default:
		return nil, fmt.Errorf("supervisor gateway answered %s", resp.Status)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxCensusBytes+1))
	if err != nil {
		return nil, fmt.Errorf("read census: %w", err)
	}
	if len(body) > maxCensusBytes {
		return nil, fmt.Errorf("census larger than %d bytes; not read", maxCensusBytes)
	}
	var c Census
	if err := json.Unmarshal(body, &c); err != nil {
		return nil, fmt.Errorf("census is not valid JSON: %w", err)
	}
	if c.LocalMemberID == "" {
		return nil, errors.New("census has no local_member_id; is this a Habitat Supervisor gateway?")
	}
	return &c, nil
}
