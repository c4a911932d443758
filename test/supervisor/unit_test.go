package supervisor

import (
	"context"
	"errors"
	"math"
	"net/netip"
	"slices"
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
			"--bind=db:postgres.default"}, env(EnvRingKey, "SYM-SEC-1\nk\n\nxx"), dns)
		require.NoError(t, err)
		require.Equal(t, "redis", o.Service)
		require.Equal(t, "redis.prod", o.ServiceGroup())
		require.Equal(t, []string{"10.0.0.11:9638", "10.0.0.10:9638"}, o.Peers, "a name resolves once, to its first IPv4")
		require.True(t, o.Permanent)
		require.Equal(t, "leader", o.Topology)
		require.Equal(t, netip.MustParseAddr("10.0.0.12"), o.SysIP)
		require.Equal(t, []string{"db:postgres.default"}, o.Binds)
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
// better news needs a higher incarnation; and server.rs's exception: Confirmed about a
// member held alive or suspect is probed first, never taken on another's word.
func TestMergeRule(t *testing.T) {
	t.Parallel()
	now := time.Unix(0, 0)
	tb := NewTable(member("self", Alive, 1), func() time.Time { return now })
	steps := []struct {
		rumor Member
		out   Outcome
		want  Health
	}{
		{member("a", Alive, 1), Changed, Alive},
		{member("a", Suspect, 1), Changed, Suspect},
		{member("a", Alive, 1), Ignored, Suspect},   // better news, same incarnation: ignored
		{member("a", Confirmed, 1), Probe, Suspect}, // held suspect: probed, not taken
		{member("a", Confirmed, 2), Probe, Suspect}, // a newer incarnation too
		{member("a", Confirmed, 0), Ignored, Suspect},
		{member("a", Alive, 2), Changed, Alive}, // refuted with a higher incarnation
		{member("a", Departed, 2), Changed, Departed},
		{member("a", Confirmed, 2), Ignored, Departed},
		{member("b", Confirmed, 1), Changed, Confirmed}, // never heard of: taken
	}
	health := func(id string) Health {
		m, ok := tb.Get(id)
		require.True(t, ok, id)
		return m.Health
	}
	for i, s := range steps {
		require.Equal(t, s.out, tb.Merge(s.rumor), "step %d", i)
		require.Equal(t, s.want, health(s.rumor.ID), "step %d", i)
	}
	tb.Merge(member("c", Suspect, 3))
	require.Equal(t, Probe, tb.Merge(member("c", Confirmed, 3)))
	require.Equal(t, Changed, tb.Confirm(member("c", Alive, 3)), "its probe went unanswered")
	require.Equal(t, Confirmed, health("c"))
	require.True(t, tb.MarkAlive("c"), "it answered directly: alive whatever the incarnation")
	require.Equal(t, Alive, health("c"))
	require.False(t, tb.MarkAlive("c"))

	require.Equal(t, Refute, tb.Merge(member("self", Suspect, 1)), "a rumor that this member is suspect is for it to refute")
	require.Equal(t, uint64(2), tb.Refute(1).Incarnation)
	require.Equal(t, Ignored, tb.Merge(member("self", Confirmed, 1)), "an old rumor is already refuted")
	require.Equal(t, Shutdown, tb.Merge(member("self", Departed, 2)))
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

// The vote of butterfly's server.rs and rumor/election.rs, one member's view at a time:
// each member starts a term with its own suitability and vote, the better candidate takes
// the other's votes, and only the candidate finishes, once every alive member voted.
func TestElection(t *testing.T) {
	t.Parallel()
	const g = "redis.default"
	group := []Member{member("a", Alive, 1), member("c", Alive, 1), member("b", Alive, 1)}
	suit := map[string]uint64{"a": 300, "b": 0, "c": 100}
	asked := map[string]int{}
	at := func(self string, members []Member) ballot {
		return ballot{self: self, members: members, suitability: func() uint64 { asked[self]++; return suit[self] }}
	}
	none := Election{Group: g, Status: ElectionNone}

	// Each member starts term 1 as its own candidate; none finishes on its own vote.
	ea, changed := at("a", group).tick(none)
	require.True(t, changed, "a started term is gossiped")
	require.Equal(t, Election{Group: g, Term: 1, Status: ElectionInProgress, Candidate: "a", Suitability: 300, Votes: []string{"a"}}, ea)
	ea, _ = at("a", group).tick(ea)
	require.Equal(t, ElectionInProgress, ea.Status, "b and c have not voted")
	ec, _ := at("c", group).tick(none)
	eb, _ := at("b", group).tick(none)

	// c hears a: the more suitable candidate stands and takes c's vote.
	ec, changed = at("c", group).receive(ec, ea)
	require.True(t, changed)
	require.Equal(t, "a", ec.Candidate)
	require.ElementsMatch(t, []string{"a", "c"}, ec.Votes)
	ec, _ = at("c", group).tick(ec)
	require.Equal(t, ElectionInProgress, ec.Status, "only the candidate finishes a term")

	// a hears c (votes a, c): still b's vote missing. Then b's own election, which a beats.
	ea, _ = at("a", group).receive(ea, ec)
	ea, _ = at("a", group).tick(ea)
	require.Equal(t, ElectionInProgress, ea.Status, "b has not voted")
	ea, _ = at("a", group).receive(ea, eb)
	ea, changed = at("a", group).tick(ea)
	require.True(t, changed)
	require.Equal(t, ElectionFinished, ea.Status)
	require.Equal(t, "a", ea.LeaderID)
	require.Equal(t, ElectionFinished, ea.Shown())

	// The finished term reaches b, which takes it whatever it held.
	eb, _ = at("b", group).receive(eb, ea)
	require.Equal(t, ElectionFinished, eb.Status)
	require.Equal(t, "a", eb.LeaderID)

	// A larger id joining does not unseat a leader that is alive.
	bigger := append(slices.Clone(group), member("z", Alive, 1))
	eb, changed = at("b", bigger).tick(eb)
	require.False(t, changed)
	require.Equal(t, "a", eb.LeaderID)

	// A follower that lost quorum shows ElectionNoQuorum and keeps the term; quorum back
	// with the leader alive, the term stands.
	lost := []Member{member("a", Suspect, 1), member("c", Confirmed, 1), member("b", Alive, 1)}
	held, _ := at("b", lost).tick(eb)
	require.Equal(t, ElectionNoQuorum, held.Shown())
	require.Equal(t, "a", held.LeaderID)
	back, changed := at("b", group).tick(held)
	require.False(t, changed)
	require.Equal(t, eb.Term, back.Term)
	require.Equal(t, ElectionFinished, back.Shown())

	// The leader that lost quorum starts a new term, with the highest suitability, and
	// without quorum (its hook is not asked).
	alone := []Member{member("a", Alive, 1), member("c", Confirmed, 1), member("b", Confirmed, 1)}
	before := asked["a"]
	ea2, _ := at("a", alone).tick(ea)
	require.Equal(t, Election{Group: g, Term: 2, Status: ElectionNoQuorum, LeaderID: "a", Candidate: "a",
		Suitability: math.MaxUint64, Votes: []string{"a"}}, ea2)
	require.Equal(t, before, asked["a"])

	// The leader confirmed dead in c's view: c starts term 2. b, which still holds a alive,
	// ignores a new term not from its leader, but joins one its leader started.
	dead := []Member{member("a", Confirmed, 1), member("c", Alive, 1), member("b", Alive, 1)}
	ec, _ = at("c", dead).receive(ec, ea)
	ec2, _ := at("c", dead).tick(ec)
	require.Equal(t, uint64(2), ec2.Term)
	require.Equal(t, "c", ec2.Candidate)
	ignored, changed := at("b", group).receive(eb, ec2)
	require.False(t, changed)
	require.Equal(t, eb, ignored)
	joined, _ := at("b", group).receive(eb, ea2)
	require.Equal(t, uint64(2), joined.Term)
	require.Equal(t, "a", joined.Candidate, "the last leader's highest suitability")
	require.ElementsMatch(t, []string{"a", "b"}, joined.Votes)

	// b confirms a too, starts its term 2; c wins it with both votes.
	eb2, _ := at("b", dead).tick(eb)
	ec2, _ = at("c", dead).receive(ec2, eb2)
	ec2, _ = at("c", dead).tick(ec2)
	require.Equal(t, ElectionFinished, ec2.Status)
	require.Equal(t, "c", ec2.LeaderID)

	// A lone member has a quorum of one and elects itself: a ring split in two elects two.
	lone := []Member{member("a", Alive, 1)}
	e, _ := at("a", lone).tick(none)
	e, _ = at("a", lone).tick(e)
	require.Equal(t, ElectionFinished, e.Status)
	require.Equal(t, "a", e.LeaderID)
}

// Election::merge: a finished term at least as new replaces what is held; a finished
// term takes no more; of two running ones the more suitable, then the larger id, stands
// with both sets of votes.
func TestElectionMerge(t *testing.T) {
	t.Parallel()
	run := func(term uint64, cand string, suit uint64, votes ...string) Election {
		return Election{Term: term, Status: ElectionInProgress, Candidate: cand, Suitability: suit, Votes: votes}
	}
	fin := func(term uint64, leader string) Election {
		return Election{Term: term, Status: ElectionFinished, Candidate: leader, Votes: []string{leader}}
	}
	e, changed := run(2, "a", 5, "a").merge(fin(2, "b"))
	require.True(t, changed)
	require.Equal(t, "b", e.LeaderID, "a finished term of the same term replaces a running one")
	e, changed = fin(3, "a").merge(fin(2, "z"))
	require.True(t, changed, "the newer term held is shared back")
	require.Equal(t, uint64(3), e.Term)
	e, changed = fin(2, "a").merge(run(2, "z", 9, "z"))
	require.False(t, changed)
	require.Equal(t, "a", e.Candidate, "a finished term changes no more")
	e, _ = run(2, "z", 1, "z").merge(run(2, "a", 5, "a", "b"))
	require.Equal(t, "a", e.Candidate, "suitability before the id")
	require.ElementsMatch(t, []string{"a", "b", "z"}, e.Votes)
	e, _ = run(2, "b", 5, "b").merge(run(2, "a", 5, "a"))
	require.Equal(t, "b", e.Candidate, "of equals the larger id")
	require.ElementsMatch(t, []string{"a", "b"}, e.Votes)
	_, changed = e.merge(e)
	require.False(t, changed, "the same rumor again changes nothing")
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
	require.Equal(t, Changed, tb.Merge(member("b", Alive, 2))) // b refuted
	require.Empty(t, tb.Expire(9300*time.Millisecond, time.Hour))
	now = now.Add(300 * time.Millisecond)
	got := tb.Expire(9300*time.Millisecond, time.Hour)
	require.Len(t, got, 1)
	require.Equal(t, "a", got[0].ID)
	require.Equal(t, Confirmed, got[0].Health)
	require.Equal(t, Quorum{Alive: 2, Confirmed: 1}, tb.QuorumOf("redis.default"))
}
