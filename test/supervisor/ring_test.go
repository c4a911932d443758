package supervisor

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/santhosh-tekuri/jsonschema/v6"
	"github.com/stretchr/testify/require"
)

// testNet hands out loopback addresses 127.X.Y.n for one test, so members listen on the
// real gossip and gateway ports (9638, 9631) as Supervisors in pods do.
type testNet struct{ prefix string }

func newNet() testNet {
	return testNet{prefix: fmt.Sprintf("127.%d.%d.", 1+rand.IntN(250), 1+rand.IntN(250))}
}

func (n testNet) ip(i int) string { return n.prefix + fmt.Sprint(i) }

type sup struct {
	*Supervisor
	ip, root string
}

// start runs a double on address n as `hab sup run core/redis <args>` with env.
func (n testNet) start(t *testing.T, i int, root string, env map[string]string, args ...string) *sup {
	t.Helper()
	if root == "" {
		root = t.TempDir()
	}
	full := append([]string{"run", "core/redis", "--listen-gossip=" + n.ip(i) + ":9638", "--listen-http=" + n.ip(i) + ":9631",
		"--sys-ip-address=" + n.ip(i)}, args...)
	// Memberlist's fast timers: these tests are of the double's rules, not of Habitat's
	// timing (TestButterflyTimers is).
	all := map[string]string{EnvSupRoot: root, EnvHostname: fmt.Sprintf("redis-%d", i), EnvTimers: "fast"}
	for k, v := range env {
		all[k] = v
	}
	o, err := Parse(t.Context(), full, func(k string) string { return all[k] }, net.DefaultResolver)
	require.NoError(t, err)
	s, err := Start(t.Context(), o, slog.New(slog.DiscardHandler))
	require.NoError(t, err)
	t.Cleanup(s.Kill)
	return &sup{Supervisor: s, ip: n.ip(i), root: root}
}

// healths is each member's health in s's view, by member id.
func healths(s *sup) map[string]Health {
	out := map[string]Health{}
	for _, m := range s.table.All() {
		out[m.ID] = m.Health
	}
	return out
}

// sees reports whether s holds member id alive: healths' zero value is Alive, so a
// member s never heard of must not pass for one it sees.
func sees(s *sup, id string) bool {
	m, ok := s.table.Get(id)
	return ok && m.Health == Alive
}

func alive(s *sup) []string {
	var out []string
	for id, h := range healths(s) {
		if h == Alive {
			out = append(out, id)
		}
	}
	slices.Sort(out)
	return out
}

func ids(ss ...*sup) []string {
	var out []string
	for _, s := range ss {
		out = append(out, s.ID())
	}
	slices.Sort(out)
	return out
}

func eventually(t *testing.T, what string, f func() bool) {
	t.Helper()
	require.Eventually(t, f, 20*time.Second, 50*time.Millisecond, what)
}

func leaderOf(s *sup) (status, leader string) {
	c := s.Census()
	g := c.CensusGroups["redis.default"]
	if g.LeaderID != nil {
		leader = *g.LeaderID
	}
	return g.ElectionStatus, leader
}

func TestJoinsByInitialPeersAndElectsOneLeader(t *testing.T) {
	t.Parallel()
	n := newNet()
	s0 := n.start(t, 1, "", nil, "--topology=leader", "--permanent-peer")
	s1 := n.start(t, 2, "", nil, "--topology=leader", "--permanent-peer", "--peer="+s0.ip)
	s2 := n.start(t, 3, "", nil, "--topology=leader", "--permanent-peer", "--peer="+s0.ip, "--peer="+s1.ip)
	all := ids(s0, s1, s2)
	for _, s := range []*sup{s0, s1, s2} {
		eventually(t, "every member sees all three alive", func() bool { return fmt.Sprint(alive(s)) == fmt.Sprint(all) })
	}
	want := all[2] // the largest id wins
	for _, s := range []*sup{s0, s1, s2} {
		eventually(t, "one leader, agreed", func() bool {
			st, l := leaderOf(s)
			return st == ElectionFinished && l == want
		})
	}
	validateCensus(t, s1)
}

// A leader that departs (SIGTERM) starts no new term on its way out: manager.rs leaves
// the main loop that restarts elections before it marks itself departed. Were it to
// start one, it would put in the highest suitability, the others would vote for it, and
// the term would never finish once it is gone.
func TestDepartedLeaderIsReplaced(t *testing.T) {
	t.Parallel()
	n := newNet()
	s0 := n.start(t, 1, "", nil, "--topology=leader")
	s1 := n.start(t, 2, "", nil, "--topology=leader", "--peer="+s0.ip)
	s2 := n.start(t, 3, "", nil, "--topology=leader", "--peer="+s0.ip)
	all := []*sup{s0, s1, s2}
	var first string
	eventually(t, "one leader, agreed", func() bool {
		seen := map[string]bool{}
		for _, s := range all {
			st, l := leaderOf(s)
			seen[st+" "+l] = true
			first = l
		}
		return len(seen) == 1 && seen[ElectionFinished+" "+first] && first != ""
	})
	i := slices.IndexFunc(all, func(s *sup) bool { return s.ID() == first })
	require.NoError(t, all[i].Depart(2*time.Second))
	rest := slices.Delete(slices.Clone(all), i, i+1)
	want := max(rest[0].ID(), rest[1].ID()) // equal suitabilities: the larger id
	for _, s := range rest {
		eventually(t, "the two left elect a new leader", func() bool {
			st, l := leaderOf(s)
			return st == ElectionFinished && l == want
		})
	}
}

// validateCensus checks GET /census against the upstream schema (testdata/: verbatim
// copies of habitat-sh/habitat components/sup/doc/*.json), prepared as upstream's own
// components/sup/src/test_helpers.rs does: the other files' definitions merged into the
// root and "<file>.json#/..." references made local, because the services schema refers
// to a definition ("#/definitions/package_identifier") that only the render context
// schema holds.
func validateCensus(t *testing.T, s *sup) {
	t.Helper()
	read := func(f string) map[string]any {
		b, err := os.ReadFile(filepath.Join("testdata", f))
		require.NoError(t, err)
		var doc map[string]any
		require.NoError(t, json.Unmarshal(b, &doc))
		return doc
	}
	root := read("http_gateway_census_schema.json")
	defs, _ := root["definitions"].(map[string]any)
	if defs == nil {
		defs = map[string]any{}
	}
	for _, f := range []string{"http_gateway_butterfly_schema.json", "http_gateway_services_schema.json", "render_context_schema.json"} {
		for k, v := range read(f)["definitions"].(map[string]any) {
			defs[k] = v
		}
	}
	root["definitions"] = defs
	var localRefs func(v any) any
	localRefs = func(v any) any {
		switch x := v.(type) {
		case map[string]any:
			for k, e := range x {
				if ref, ok := e.(string); ok && k == "$ref" {
					if i := strings.Index(ref, "#"); i > 0 {
						x[k] = ref[i:]
					}
					continue
				}
				x[k] = localRefs(e)
			}
		case []any:
			for i := range x {
				x[i] = localRefs(x[i])
			}
		}
		return v
	}
	localRefs(root)
	delete(root, "$schema") // the merged definitions mix draft-04 and draft-07; validate as draft-07
	c := jsonschema.NewCompiler()
	c.DefaultDraft(jsonschema.Draft7)
	require.NoError(t, c.AddResource("file:///census.json", root))
	schema, err := c.Compile("file:///census.json")
	require.NoError(t, err)
	w := httptest.NewRecorder()
	s.Gateway().ServeHTTP(w, httptest.NewRequest(http.MethodGet, "/census", nil))
	require.Equal(t, http.StatusOK, w.Code)
	doc, err := jsonschema.UnmarshalJSON(w.Body)
	require.NoError(t, err)
	require.NoError(t, schema.Validate(doc))

	// The schema checks types, not that every field is there: the labeler's fields must be.
	var c2 struct {
		LocalMemberID string `json:"local_member_id"`
		Groups        map[string]struct {
			ElectionStatus string         `json:"election_status"`
			LeaderID       *string        `json:"leader_id"`
			Population     map[string]any `json:"population"`
		} `json:"census_groups"`
	}
	w = httptest.NewRecorder()
	s.Gateway().ServeHTTP(w, httptest.NewRequest(http.MethodGet, "/census", nil))
	require.NoError(t, json.Unmarshal(w.Body.Bytes(), &c2))
	require.Equal(t, s.ID(), c2.LocalMemberID)
	require.Len(t, c2.Groups["redis.default"].Population, 3)
	require.Equal(t, ElectionFinished, c2.Groups["redis.default"].ElectionStatus)
}

func TestUnresolvablePeerFailsTheStart(t *testing.T) {
	t.Parallel()
	n := newNet()
	_, err := Parse(t.Context(), []string{"run", "core/redis", "--peer=redis-9.nowhere.invalid", "--listen-gossip=" + n.ip(1) + ":9638"},
		func(string) string { return "" }, net.DefaultResolver)
	require.ErrorIs(t, err, ErrUnresolvable)
}

func TestDifferentRingKeysCannotGossip(t *testing.T) {
	t.Parallel()
	n := newNet()
	s0 := n.start(t, 1, "", map[string]string{EnvRingKey: "SYM-SEC-1\nfoo-1\n\nAAAA"})
	s1 := n.start(t, 2, "", map[string]string{EnvRingKey: "SYM-SEC-1\nbar-1\n\nBBBB"}, "--peer="+s0.ip)
	s2 := n.start(t, 3, "", map[string]string{EnvRingKey: "SYM-SEC-1\nfoo-1\n\nAAAA"}, "--peer="+s0.ip)
	eventually(t, "same key: joined", func() bool { return len(alive(s2)) == 2 })
	time.Sleep(3 * time.Second) // several join attempts and push-pull rounds
	require.Equal(t, []string{s1.ID()}, alive(s1), "a member with another key joined")
	require.NotContains(t, alive(s0), s1.ID())
}

func TestDepartureAndDeath(t *testing.T) {
	t.Parallel()
	n := newNet()
	short := map[string]string{EnvDepartureTimeout: "4s"}
	s0 := n.start(t, 1, "", short, "--topology=leader")
	s1 := n.start(t, 2, "", short, "--topology=leader", "--peer="+s0.ip)
	s2 := n.start(t, 3, "", short, "--topology=leader", "--peer="+s0.ip)
	s3 := n.start(t, 4, "", short, "--topology=leader", "--peer="+s0.ip)
	eventually(t, "four alive", func() bool { return len(alive(s0)) == 4 })

	require.NoError(t, s2.Depart(2*time.Second)) // SIGTERM
	eventually(t, "a SIGTERM departs", func() bool { return healths(s0)[s2.ID()] == Departed })
	s3.Kill() // SIGKILL
	eventually(t, "a SIGKILL leaves a confirmed member", func() bool { return healths(s0)[s3.ID()] == Confirmed })
	q := s0.table.QuorumOf("redis.default")
	require.Equal(t, Quorum{Alive: 2, Confirmed: 1, Departed: 1}, q, "the confirmed member counts in the quorum, the departed one does not")
	eventually(t, "confirmed turns departed after the departure timeout", func() bool { return healths(s1)[s3.ID()] == Departed })
}

// Another member's word that a member is Confirmed is not taken while this view holds it
// alive: it is probed at the next round, and confirmed only if it does not answer
// (butterfly server.rs insert_member_from_rumor). A false rumor is so dropped, a true one
// taken a round and a ping timeout later.
func TestConfirmedRumorIsProbedFirst(t *testing.T) {
	t.Parallel()
	n := newNet()
	s0 := n.start(t, 1, "", nil)
	s1 := n.start(t, 2, "", nil, "--peer="+s0.ip)
	n.start(t, 3, "", nil, "--peer="+s0.ip)
	eventually(t, "three alive", func() bool { return len(alive(s0)) == 3 })

	lie, ok := s0.table.Get(s1.ID())
	require.True(t, ok)
	lie.Health = Confirmed
	s0.take(lie)
	require.Equal(t, Alive, healths(s0)[s1.ID()], "not taken on another's word")
	// Two rounds of the fast timers (500 ms a pingable member) and more: s1 answered.
	time.Sleep(3 * time.Second)
	require.Equal(t, Alive, healths(s0)[s1.ID()], "it answered its probe")

	// A member only rumors told of (memberlist never probes it), with nothing at its
	// address: nothing but the probe round can find it dead.
	ghost := member("0123456789abcdef0123456789abcdef", Alive, 1)
	ghost.IP = n.ip(9)
	require.Equal(t, Changed, s0.table.Merge(ghost))
	ghost.Health = Confirmed
	s0.take(ghost)
	require.Equal(t, Alive, healths(s0)[ghost.ID])
	eventually(t, "confirmed once it failed its probe", func() bool { return healths(s0)[ghost.ID] == Confirmed })
}

func TestQuorumLostToDeadMembers(t *testing.T) {
	t.Parallel()
	n := newNet()
	s0 := n.start(t, 1, "", nil, "--topology=leader")
	s1 := n.start(t, 2, "", nil, "--topology=leader", "--peer="+s0.ip)
	s2 := n.start(t, 3, "", nil, "--topology=leader", "--peer="+s0.ip)
	eventually(t, "one ring of three", func() bool { return len(alive(s0)) == 3 })
	eventually(t, "elected", func() bool { st, _ := leaderOf(s0); return st == ElectionFinished })
	s1.Kill()
	s2.Kill()
	eventually(t, "1 alive of 3 (two confirmed): no quorum", func() bool {
		st, _ := leaderOf(s0)
		return st == ElectionNoQuorum
	})
}

func TestPermanentPeerIsRetriedAtItsLastAddress(t *testing.T) {
	t.Parallel()
	n := newNet()
	p := n.start(t, 1, "", nil, "--permanent-peer")
	plain := n.start(t, 2, "", nil)
	s := n.start(t, 3, "", nil, "--peer="+p.ip, "--peer="+plain.ip)
	eventually(t, "three alive", func() bool { return len(alive(s)) == 3 })
	p.Kill()
	plain.Kill()
	eventually(t, "both confirmed", func() bool {
		h := healths(s)
		return h[p.ID()] == Confirmed && h[plain.ID()] == Confirmed
	})
	// Both come back at the same address with their member ids and no peers: only the
	// permanent one is found again.
	p2 := n.start(t, 1, p.root, nil, "--permanent-peer")
	plain2 := n.start(t, 2, plain.root, nil)
	require.Equal(t, p.ID(), p2.ID(), "MEMBER_ID kept in the Supervisor's root")
	eventually(t, "the permanent peer is back in the ring", func() bool { return sees(s, p.ID()) })
	time.Sleep(3 * time.Second)
	require.Equal(t, []string{plain2.ID()}, alive(plain2), "a non-permanent member restarted alone stays alone")
}

func TestWatchFileIsReadOnlyWhileAlone(t *testing.T) {
	t.Parallel()
	n := newNet()
	a := n.start(t, 1, "", nil)
	b := n.start(t, 2, "", nil)
	file := filepath.Join(t.TempDir(), "peers")
	require.NoError(t, os.WriteFile(file, nil, 0o644))
	w := n.start(t, 3, "", nil, "--peer-watch-file="+file)
	time.Sleep(time.Second)
	require.Len(t, alive(w), 1, "an empty file: alone")
	require.NoError(t, os.WriteFile(file, []byte(a.ip+"\n"), 0o644))
	eventually(t, "a file event while alone: joins", func() bool { return len(alive(w)) == 2 })
	require.NoError(t, os.WriteFile(file, []byte(b.ip+"\n"), 0o644))
	time.Sleep(3 * time.Second)
	require.NotContains(t, alive(w), b.ID(), "a member that knows anyone ignores the file")
}

func TestLoneMemberElectsItself(t *testing.T) {
	t.Parallel()
	n := newNet()
	// The seed's split brain: a ring of three, then pod 0 re-created alone (new filesystem,
	// new member id, no --peer) while 1 and 2 live.
	s0 := n.start(t, 1, "", nil, "--topology=leader", "--permanent-peer")
	s1 := n.start(t, 2, "", nil, "--topology=leader", "--permanent-peer", "--peer="+s0.ip)
	s2 := n.start(t, 3, "", nil, "--topology=leader", "--permanent-peer", "--peer="+s0.ip, "--peer="+s1.ip)
	eventually(t, "one ring", func() bool { return len(alive(s2)) == 3 })
	s0.Kill()
	again := n.start(t, 4, "", nil, "--topology=leader", "--permanent-peer") // a new pod IP
	eventually(t, "the lone member elects itself", func() bool {
		st, l := leaderOf(again)
		return st == ElectionFinished && l == again.ID()
	})
	eventually(t, "the old ring elects its own leader", func() bool {
		st, l := leaderOf(s1)
		return st == ElectionFinished && l != "" && l != s0.ID()
	})
	_, l1 := leaderOf(s1)
	require.NotEqual(t, again.ID(), l1, "two rings, two leaders")
	require.NotContains(t, alive(s1), again.ID())
}

func TestGatewayAuth(t *testing.T) {
	t.Parallel()
	n := newNet()
	s := n.start(t, 1, "", map[string]string{EnvGatewayAuthToken: "s3cret"})
	get := func(auth string) int {
		req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, "http://"+s.ip+":9631/census", nil)
		require.NoError(t, err)
		if auth != "" {
			req.Header.Set("Authorization", auth)
		}
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		defer func() { _ = resp.Body.Close() }()
		if resp.StatusCode == http.StatusOK {
			var c Census
			require.NoError(t, json.NewDecoder(resp.Body).Decode(&c))
			require.Equal(t, s.ID(), c.LocalMemberID)
		}
		return resp.StatusCode
	}
	require.Equal(t, http.StatusUnauthorized, get(""))
	require.Equal(t, http.StatusUnauthorized, get("Bearer nope"))
	require.Equal(t, http.StatusOK, get("Bearer s3cret"))
}

// Initial peers are pinged until the member list holds len/2+1 of them, then no more
// (butterfly/src/server/outbound.rs): with one of three up, the member keeps trying, and a
// second that comes up later is found; with two of three up it stops.
func TestInitialPeersPingedUntilHalfPlusOne(t *testing.T) {
	t.Parallel()
	n := newNet()
	a := n.start(t, 1, "", nil)
	s := n.start(t, 4, "", nil, "--peer="+a.ip, "--peer="+n.ip(2), "--peer="+n.ip(3))
	eventually(t, "joined the one that is up", func() bool { return len(alive(s)) == 2 })
	time.Sleep(1500 * time.Millisecond)
	s.mu.Lock()
	have := s.haveMembers
	s.mu.Unlock()
	require.False(t, have, "1 of 3 initial peers known: not enough, still pinging")
	b := n.start(t, 2, "", nil) // no peers of its own: found only because s keeps pinging
	eventually(t, "the second initial peer is found when it comes up", func() bool { return len(alive(b)) == 3 })
	eventually(t, "2 of 3 known: pinging stops", func() bool {
		s.mu.Lock()
		defer s.mu.Unlock()
		return s.haveMembers
	})
}
