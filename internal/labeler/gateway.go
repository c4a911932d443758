package labeler

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
)

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
	return DecodeCensus(body)
}

// DecodeCensus reads the part of a /census body the labeler uses. Errors say what to check.
func DecodeCensus(body []byte) (*Census, error) {
	var c Census
	if err := json.Unmarshal(body, &c); err != nil {
		return nil, fmt.Errorf("census is not valid JSON: %w", err)
	}
	if c.LocalMemberID == "" {
		return nil, errors.New("census has no local_member_id; is this a Habitat Supervisor gateway?")
	}
	return &c, nil
}
