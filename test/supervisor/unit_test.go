package supervisor

import (
	"context"
	"errors"
	"net/netip"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

type fakeResolver map[string][]netip.Addr

func (f fakeResolver) LookupNetIP(_ context.Context, _, host string) ([]netip.Addr, error) {
	if ips, ok := f[host]; ok {
		return ips, nil
	}
	return nil, errors.New("no such host")
}

func TestParse(t *testing.T) {
	t.Parallel()
	dns := fakeResolver{"redis-0.redis.shop.svc.cluster.local": {netip.MustParseAddr("10.0.0.10"), netip.MustParseAddr("10.0.0.99")}}
	env := func(kv ...string) func(string) string {
		return func(k string) string {
			for i := 0; i+1 < len(kv); i += 2 {
				if kv[i] == k {
					return kv[i+1]
				}
			}
			return ""
		}
	}
	t.Run("as the webhook injects them", func(t *testing.T) {
		t.Parallel()
		o, err := Parse(t.Context(), []string{"run", "core/redis", "--peer=10.0.0.11", "--peer=redis-0.redis.shop.svc.cluster.local",
			"--permanent-peer", "--listen-gossip=0.0.0.0:9638", "--sys-ip-address=10.0.0.12", "--topology=leader", "--group=prod",
			"--bind=db:postgres.default"}, env(EnvRingKey, "SYM-SEC-1\nk\n\nxx", EnvSettle, "100ms"), dns)
		require.NoError(t, err)
		require.Equal(t, "redis", o.Service)
		require.Equal(t, "redis.prod", o.ServiceGroup())
		require.Equal(t, []string{"10.0.0.11:9638", "10.0.0.10:9638"}, o.Peers, "a name resolves once, to its first IPv4")
		require.True(t, o.Permanent)
		require.Equal(t, "leader", o.Topology)
		require.Equal(t, netip.MustParseAddr("10.0.0.12"), o.SysIP)
		require.Equal(t, []string{"db:postgres.default"}, o.Binds)
		require.Equal(t, 100*time.Millisecond, o.Settle)
		require.Equal(t, DefaultDepartureTimeout, o.DepartureTimeout)
		require.NotEmpty(t, o.RingKey)
	})
	t.Run("flag and value as two words, watch file", func(t *testing.T) {
		t.Parallel()
		o, err := Parse(t.Context(), []string{"start", "core/nginx", "--peer-watch-file", "/var/run/habring/peers", "-I"}, env(), dns)
		require.NoError(t, err)
		require.Equal(t, "/var/run/habring/peers", o.PeerWatchFile)
		require.True(t, o.Permanent)
		require.Equal(t, "standalone", o.Topology)
		require.Equal(t, DefaultHealthCheckInterval, o.HealthCheckInterval)
		require.Empty(t, o.PlanDir, "no plan: no service runs")
	})
	t.Run("a service: its plan, directories, user config and health check interval", func(t *testing.T) {
		t.Parallel()
		o, err := Parse(t.Context(), []string{"run", "habring/redis-cache", "--health-check-interval", "5"},
			env(EnvPlan, "/plans/redis", EnvSvcRoot, "/tmp/svc", "HAB_REDIS_CACHE", "port = 1"), dns)
		require.NoError(t, err)
		require.Equal(t, "/plans/redis", o.PlanDir)
		require.Equal(t, "/tmp/svc", o.SvcRoot)
		require.Equal(t, DefaultUserRoot, o.UserRoot)
		require.Equal(t, "port = 1", o.UserEnv)
		require.Equal(t, 5*time.Second, o.HealthCheckInterval)
		require.False(t, o.FastTimers)
	})
	errs := map[string]struct {
		args []string
		want error
	}{
		"unresolvable name fails the start": {args: []string{"run", "core/redis", "--peer=redis-1.redis.shop.svc.cluster.local"}, want: ErrUnresolvable},
		"no package":                        {args: []string{"--peer=10.0.0.1"}, want: ErrUsage},
		"run without a package":             {args: []string{"run", "--peer=10.0.0.1"}, want: ErrUsage},
		"unknown flag":                      {args: []string{"run", "core/redis", "--nope"}, want: ErrUsage},
		"peer and watch file":               {args: []string{"run", "core/redis", "--peer=10.0.0.1", "--peer-watch-file=/x"}, want: ErrUsage},
		"topology":                          {args: []string{"run", "core/redis", "--topology=leaderless"}, want: ErrUsage},
		"IPv6 peer":                         {args: []string{"run", "core/redis", "--peer=[::1]:9638"}, want: ErrUsage},
		"health check interval":             {args: []string{"run", "core/redis", "--health-check-interval=5s"}, want: ErrUsage},
	}
	for name, tc := range errs {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			_, err := Parse(t.Context(), tc.args, env(), dns)
			require.ErrorIs(t, err, tc.want)
		})
	}
}

func member(id string, h Health, inc uint64) Member {
	return Member{ID: id, IP: "10.0.0.1", GossipPort: 9638, Incarnation: inc, Health: h, Service: "redis", Group: "default"}
}

// The rumor rule of butterfly/src/member.rs: worse news at the same incarnation wins,
// better news needs a higher incarnation.
func TestMergeRule(t *testing.T) {
	t.Parallel()
	now := time.Unix(0, 0)
	tb := NewTable(member("self", Alive, 1), func() time.Time { return now })
	steps := []struct {
		rumor   Member
		changed bool
		want    Health
	}{
		{member("a", Alive, 1), true, Alive},
		{member("a", Suspect, 1), true, Suspect},
		{member("a", Alive, 1), false, Suspect}, // better news, same incarnation: ignored
		{member("a", Confirmed, 1), true, Confirmed},
		{member("a", Alive, 2), true, Alive}, // refuted with a higher incarnation
		{member("a", Departed, 2), true, Departed},
		{member("a", Confirmed, 2), false, Departed},
	}
	for i, s := range steps {
		changed, _ := tb.Merge(s.rumor)
		require.Equal(t, s.changed, changed, "step %d", i)
		var got Health
		for _, m := range tb.All() {
			if m.ID == "a" {
				got = m.Health
			}
		}
		require.Equal(t, s.want, got, "step %d", i)
	}
	_, about := tb.Merge(member("self", Suspect, 1))
	require.Equal(t, Suspect, about, "a rumor that this member is suspect is for it to refute")
	require.Equal(t, uint64(2), tb.Refute(1).Incarnation)
	_, about = tb.Merge(member("self", Confirmed, 1))
	require.Equal(t, Alive, about, "an old rumor is already refuted")
	_, about = tb.Merge(member("self", Departed, 2))
	require.Equal(t, Departed, about)
}

func TestQuorumCountsConfirmedUntilDeparted(t *testing.T) {
	t.Parallel()
	now := time.Unix(0, 0)
	tb := NewTable(member("c", Alive, 1), func() time.Time { return now })
	tb.Merge(member("a", Confirmed, 1))
	tb.Merge(member("b", Confirmed, 1))
	tb.Merge(member("d", Alive, 1))
	// Two crashes of a four-member group: 2 alive of 4 is not more than half.
	require.Equal(t, Quorum{Alive: 2, Confirmed: 2}, tb.QuorumOf("redis.default"))
	require.False(t, tb.QuorumOf("redis.default").Has())
	now = now.Add(time.Hour)
	require.Empty(t, tb.Expire(time.Minute, 2*time.Hour), "departed before the departure timeout")
	now = now.Add(time.Hour)
	require.Len(t, tb.Expire(time.Minute, 2*time.Hour), 2)
	require.Equal(t, Quorum{Alive: 2, Departed: 2}, tb.QuorumOf("redis.default"))
	require.True(t, tb.QuorumOf("redis.default").Has())
}

func TestElection(t *testing.T) {
	t.Parallel()
	t0 := time.Unix(1000, 0)
	settle := 2 * time.Second
	group := []Member{member("a", Alive, 1), member("c", Alive, 1), member("b", Alive, 1)}
	e := Election{Group: "redis.default", Status: ElectionNone}

	e, gossip := step(e, group, true, settle, t0)
	require.Equal(t, ElectionInProgress, e.Status)
	require.False(t, gossip)
	e, _ = step(e, group, false, settle, t0.Add(time.Second))
	require.Equal(t, ElectionInProgress, e.Status, "still settling")
	e, _ = step(e, group, true, settle, t0.Add(1500*time.Millisecond)) // the group changed: settle again
	e, _ = step(e, group, false, settle, t0.Add(3*time.Second))
	require.Equal(t, ElectionInProgress, e.Status)
	e, gossip = step(e, group, false, settle, t0.Add(4*time.Second))
	require.Equal(t, Election{Group: "redis.default", Term: 1, Status: ElectionFinished, LeaderID: "c", started: e.started}, e)
	require.True(t, gossip, "a finished election is gossiped")

	// A larger id joining does not unseat a leader that is alive.
	bigger := append(group, member("z", Alive, 1))
	e, _ = step(e, bigger, true, settle, t0.Add(5*time.Second))
	require.Equal(t, "c", e.LeaderID)

	// Quorum lost: ElectionNoQuorum, leader_id kept (the labeler must look at the status).
	lost := []Member{member("a", Confirmed, 1), member("c", Alive, 1), member("b", Confirmed, 1)}
	e, _ = step(e, lost, true, settle, t0.Add(6*time.Second))
	require.Equal(t, ElectionNoQuorum, e.Status)
	require.Equal(t, "c", e.LeaderID)

	// The leader confirmed dead: a new term, won by the largest alive id.
	dead := []Member{member("a", Alive, 1), member("c", Confirmed, 1), member("b", Alive, 1)}
	e, _ = step(e, dead, true, settle, t0.Add(7*time.Second))
	require.Equal(t, ElectionInProgress, e.Status)
	require.Equal(t, uint64(2), e.Term)
	e, _ = step(e, dead, false, settle, t0.Add(10*time.Second))
	require.Equal(t, ElectionFinished, e.Status)
	require.Equal(t, "b", e.LeaderID)

	// A lone member has a quorum of one and elects itself: a ring split in two elects two.
	lone := Election{Group: "redis.default", Status: ElectionNone}
	lone, _ = step(lone, []Member{member("a", Alive, 1)}, true, settle, t0)
	lone, _ = step(lone, []Member{member("a", Alive, 1)}, false, settle, t0.Add(settle))
	require.Equal(t, ElectionFinished, lone.Status)
	require.Equal(t, "a", lone.LeaderID)
}

func TestElectionRumors(t *testing.T) {
	t.Parallel()
	fin := func(term uint64, leader string) Election {
		return Election{Term: term, Status: ElectionFinished, LeaderID: leader}
	}
	require.True(t, fin(3, "a").supersedes(fin(2, "z")), "a higher term wins")
	require.True(t, fin(2, "z").supersedes(fin(2, "a")), "same term: the larger leader id")
	require.False(t, fin(2, "a").supersedes(fin(2, "z")))
	require.True(t, fin(2, "a").supersedes(Election{Term: 2, Status: ElectionInProgress}), "finished over running")
}

// A suspect is confirmed once the suspicion timeout (butterfly: 3 protocol periods, 9.3 s)
// passed since it was first suspected, unless it refuted in between.
func TestSuspicionTimeout(t *testing.T) {
	t.Parallel()
	now := time.Unix(0, 0)
	tb := NewTable(member("c", Alive, 1), func() time.Time { return now })
	tb.Merge(member("a", Suspect, 1))
	tb.Merge(member("b", Suspect, 1))
	now = now.Add(9 * time.Second)
	changed, _ := tb.Merge(member("b", Alive, 2)) // b refuted
	require.True(t, changed)
	require.Empty(t, tb.Expire(9300*time.Millisecond, time.Hour))
	now = now.Add(300 * time.Millisecond)
	got := tb.Expire(9300*time.Millisecond, time.Hour)
	require.Len(t, got, 1)
	require.Equal(t, "a", got[0].ID)
	require.Equal(t, Confirmed, got[0].Health)
	require.Equal(t, Quorum{Alive: 2, Confirmed: 1}, tb.QuorumOf("redis.default"))
}
