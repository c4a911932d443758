package supervisor

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// rootWithID is a Supervisor root holding MEMBER_ID id (32 hex digits), so a test knows
// which member the id tie-break favours.
func rootWithID(t *testing.T, id string) string {
	t.Helper()
	root := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(root, "MEMBER_ID"), []byte(id), 0o644))
	return root
}

func fixedID(n int) string { return fmt.Sprintf("%032x", n) }

func ringLeader(s *sup) string {
	st, l := leaderOf(s)
	if st != ElectionFinished {
		return ""
	}
	return l
}

// Suitability decides an election before the member id (butterfly Election::merge). A
// service not yet initialized answers 0 (Service::suitability), and a leader-topology
// service is initialized only once an election finishes, so the FIRST election of a ring
// is won by the largest id among the members it saw; suitability decides the elections
// after it. The suitabilities fall as the ids rise, so whichever member leads first, the
// re-election without it goes to the smaller id of the two left.
func TestSuitabilityRanksCandidatesBeforeTheMemberID(t *testing.T) {
	t.Parallel()
	plan := writePlan(t, map[string]string{"hooks/run": "#!/bin/sh\nexec sleep 600\n",
		"hooks/suitability": "#!/bin/sh\necho {{cfg.suitability}}\n"})
	n := newNet()
	start := func(i, suitability int, peers ...string) *sup {
		env := map[string]string{EnvPlan: plan, EnvSvcRoot: t.TempDir(), "HAB_REDIS": fmt.Sprintf("suitability = %d", suitability)}
		args := []string{"--topology=leader"}
		for _, p := range peers {
			args = append(args, "--peer="+p)
		}
		return n.start(t, i, rootWithID(t, fixedID(i)), env, args...)
	}
	s1 := start(1, 300)
	s2 := start(2, 200, s1.ip)
	s3 := start(3, 100, s1.ip, s2.ip)
	sups := []*sup{s1, s2, s3}
	first := leaderIndex(t, sups)
	sups[first].Kill()
	rest := slices.Delete(slices.Clone(sups), first, first+1) // by id, smallest first
	defer func() {                                            // what each member saw, when the re-election did not come
		if !t.Failed() {
			return
		}
		for _, s := range rest {
			s.mu.Lock()
			t.Logf("%s election %+v", s.ID()[:6], s.election)
			s.mu.Unlock()
			for _, m := range s.table.All() {
				t.Logf("  %s %s inc %d suit %d", m.ID[:6], m.Health, m.Incarnation, m.Suitability)
			}
		}
	}()
	for _, s := range rest {
		eventually(t, "re-election: the most suitable, not the largest id", func() bool { return ringLeader(s) == rest[0].ID() })
	}
	assert.Equal(t, []uint64{300, 200, 100}[slices.Index(sups, rest[0])], rest[0].table.Self().Suitability, "its hook's answer")
}

// leaderIndex waits until every member agrees on one leader and returns its index.
func leaderIndex(t *testing.T, sups []*sup) int {
	t.Helper()
	i := -1
	eventually(t, "one leader, agreed", func() bool {
		l := ringLeader(sups[0])
		i = slices.IndexFunc(sups, func(s *sup) bool { return s.ID() == l })
		return i >= 0 && !slices.ContainsFunc(sups, func(s *sup) bool { return ringLeader(s) != l })
	})
	return i
}

// The row of the facts marked unverified: "a member about to become leader may render its
// no-replicaof file mid-election, then the same file after the election (same hash: no
// restart)". What the Supervisor's order of events does instead: while the election runs,
// members keep the leader/follower flags of the last finished one (census.rs
// update_from_election_rumor), so the would-be leader still renders "follower of <dead
// leader>"; the file changes only on the tick that sees the election finished, and that
// tick acts on it: a restart without a reconfigure hook, the hook with one. The change is
// never lost for a new leader; it is lost only for changes made while the election runs
// (TestLeaderTopologyHooksWaitAndMidElectionChangesAreLost).
func TestNewLeaderActsOnItsRoleOnceTheElectionFinishes(t *testing.T) {
	t.Parallel()
	for name, reconfigure := range map[string]bool{"restarted": false, "reconfigured": true} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			plan := startsPlan(t, reconfigure)
			n := newNet()
			var sups []*sup
			var svcRoots []string
			for i := 1; i <= 3; i++ {
				var peers []string
				for _, s := range sups {
					peers = append(peers, "--peer="+s.ip)
				}
				root := t.TempDir()
				svcRoots = append(svcRoots, root)
				sups = append(sups, n.start(t, i, rootWithID(t, fixedID(i)), map[string]string{EnvPlan: plan, EnvSvcRoot: root},
					append([]string{"--topology=leader"}, peers...)...))
			}
			old := leaderIndex(t, sups)
			// The re-election goes to the larger id of the two left; the other follows.
			rest := slices.Delete([]int{0, 1, 2}, old, old+1)
			next, other := rest[1], rest[0]
			role := func(i int) string {
				return strings.TrimSpace(read(t, filepath.Join(svcRoots[i], "redis", "config", "role.conf")))
			}
			varDir := func(i int) string { return filepath.Join(svcRoots[i], "redis", "var") }
			for i := range 3 {
				waitLines(t, filepath.Join(varDir(i), "starts"), 1)
			}
			require.Equal(t, "follower of "+sups[old].ip, role(next))

			// Kill the leader. Until its election is finished, the next leader renders what it
			// rendered before.
			sups[old].Kill()
			var seen []string
			require.Eventually(t, func() bool {
				st, _ := leaderOf(sups[next])
				r := role(next)
				if len(seen) == 0 || seen[len(seen)-1] != st+": "+r {
					seen = append(seen, st+": "+r)
				}
				return ringLeader(sups[next]) == sups[next].ID()
			}, 20*time.Second, 5*time.Millisecond)
			for _, s := range seen[:len(seen)-1] {
				assert.NotContains(t, s, "leader\n", "before the election finished: %v", seen)
				assert.True(t, strings.HasSuffix(s, "follower of "+sups[old].ip) || strings.HasPrefix(s, ElectionFinished), "sticky flags: %v", seen)
			}
			eventually(t, "the new leader's role file says leader", func() bool { return role(next) == "leader" })
			eventually(t, "the other follows it", func() bool { return role(other) == "follower of "+sups[next].ip })
			if reconfigure {
				waitLines(t, filepath.Join(varDir(next), "reconfigures"), 1)
				waitLines(t, filepath.Join(varDir(other), "reconfigures"), 1)
				assert.Equal(t, []string{"leader"}, lines(t, filepath.Join(varDir(next), "reconfigures")))
				assert.Equal(t, []string{"follower of " + sups[next].ip}, lines(t, filepath.Join(varDir(other), "reconfigures")))
				assert.Len(t, lines(t, filepath.Join(varDir(next), "starts")), 1, "no restart")
				return
			}
			waitLines(t, filepath.Join(varDir(next), "starts"), 2)
			waitLines(t, filepath.Join(varDir(other), "starts"), 2)
			time.Sleep(1500 * time.Millisecond) // a tick or two more: exactly one restart each
			assert.Len(t, lines(t, filepath.Join(varDir(next), "starts")), 2)
			assert.Len(t, lines(t, filepath.Join(varDir(other), "starts")), 2)
		})
	}
}

// Butterfly's failure detection is the default (components/butterfly/src/server/timing.rs):
// 1 s for a ping's ack, 2.1 s for ping-reqs through 5 others, a 3.1 s protocol period, a
// suspect confirmed after 3 periods (9.3 s), no Lifeguard stretching; a killed member is
// Confirmed no sooner than 9.3 s after it was first suspected, and within a few periods
// of that. Memberlist's fast timers are the unit tests' opt-in only.
func TestButterflyTimers(t *testing.T) {
	t.Parallel()
	o, err := Parse(t.Context(), []string{"run", "core/redis"}, func(string) string { return "" }, nil)
	require.NoError(t, err)
	require.False(t, o.FastTimers, "Habitat's timers by default")
	_, err = Parse(t.Context(), []string{"run", "core/redis"}, func(k string) string { return map[string]string{EnvTimers: "slow"}[k] }, nil)
	require.ErrorIs(t, err, ErrUsage)

	n := newNet()
	habitat := map[string]string{EnvTimers: "habitat"}
	s1 := n.start(t, 1, "", habitat)
	s2 := n.start(t, 2, "", habitat, "--peer="+s1.ip)
	s3 := n.start(t, 3, "", habitat, "--peer="+s1.ip, "--peer="+s2.ip)
	for _, s := range []*sup{s1, s2, s3} {
		eventually(t, "all three alive", func() bool { return len(alive(s)) == 3 })
	}
	// A departure is known at once, never taken for a death.
	s4 := n.start(t, 4, "", habitat, "--peer="+s1.ip)
	// Both ways: a member that departs before it joined tells nobody, and is found dead.
	eventually(t, "s1 and s4 see each other", func() bool { return sees(s1, s4.ID()) && sees(s4, s1.ID()) })
	require.NoError(t, s4.Depart(time.Second))
	// Polled here, not in require.Eventually, whose condition runs in a goroutine that may
	// still write what its failure message reads.
	seen := map[Health]int{}
	for deadline := time.Now().Add(3 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		h := healths(s1)[s4.ID()]
		seen[h]++
		if h == Departed {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("s1 did not learn the departure within 3 s; polls saw %v", seen)
		}
	}
	assert.Zero(t, seen[Suspect], "a departing member taken for dead")

	killed := time.Now()
	s3.Kill()
	var suspected, confirmed time.Duration
	require.Eventually(t, func() bool {
		h := healths(s1)[s3.ID()]
		if h == Suspect && suspected == 0 {
			suspected = time.Since(killed)
		}
		if h >= Confirmed {
			confirmed = time.Since(killed)
			return true
		}
		return false
	}, 40*time.Second, 20*time.Millisecond)
	t.Logf("killed member: suspect after %s, confirmed after %s", suspected.Round(time.Millisecond), confirmed.Round(time.Millisecond))
	require.NotZero(t, suspected, "suspected before confirmed")
	assert.GreaterOrEqual(t, confirmed-suspected, 9*time.Second, "3 protocol periods of suspicion (9.3 s)")
	assert.GreaterOrEqual(t, confirmed, 10*time.Second)
}

// SIGTERM departs the member first, then stops its service (SIGTERM to the run hook), and
// nothing starts it again (manager.rs: the main loop ends, set_departed, then
// stop_service_future); SIGKILL of the Supervisor takes its service with it.
func TestShutdownDepartsThenStopsTheService(t *testing.T) {
	t.Parallel()
	plan := startsPlan(t, false)
	n := newNet()
	roots := []string{t.TempDir(), t.TempDir(), t.TempDir()}
	s1 := n.start(t, 1, "", map[string]string{EnvPlan: plan, EnvSvcRoot: roots[0]})
	s2 := n.start(t, 2, "", map[string]string{EnvPlan: plan, EnvSvcRoot: roots[1]}, "--peer="+s1.ip)
	s3 := n.start(t, 3, "", map[string]string{EnvPlan: plan, EnvSvcRoot: roots[2]}, "--peer="+s1.ip)
	varDir := func(i int) string { return filepath.Join(roots[i], "redis", "var") }
	for i := range 3 {
		waitLines(t, filepath.Join(varDir(i), "starts"), 1) // standalone: started at the first tick
	}
	eventually(t, "s1 sees s2", func() bool { return sees(s1, s2.ID()) })

	require.NoError(t, s2.Depart(time.Second))
	assert.Equal(t, []string{"stop"}, lines(t, filepath.Join(varDir(1), "stops")), "the run hook got SIGTERM")
	eventually(t, "s1 sees s2 departed", func() bool { return healths(s1)[s2.ID()] == Departed })
	time.Sleep(1500 * time.Millisecond)
	assert.Len(t, lines(t, filepath.Join(varDir(1), "starts")), 1, "not started again while shutting down")
	assert.Equal(t, "down", s2.svc.Status().Process.State)

	s3.Kill()
	assert.Equal(t, "down", s3.svc.Status().Process.State)
	assert.Nil(t, lines(t, filepath.Join(varDir(2), "stops")), "killed, not stopped")
}
