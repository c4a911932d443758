package supervisor

import (
	"bufio"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fsnotify/fsnotify"
	"github.com/hashicorp/memberlist"
)

// ErrDeparted is why a member stops when it learns the ring departed it: the real
// Supervisor shuts down with an error then (sup/src/manager.rs check_for_departure).
var ErrDeparted = errors.New("this member was departed from the ring")

// Supervisor is one running double: its SWIM layer (memberlist), its view of the ring,
// its election and its HTTP gateway.
type Supervisor struct {
	opts  Options
	log   *slog.Logger
	table *Table
	ml    *memberlist.Memberlist
	queue *memberlist.TransmitLimitedQueue
	http  *http.Server
	svc   *Service // the service it supervises; nil without a plan

	mu          sync.Mutex
	election    Election            // the local member's group (leader topology)
	elections   map[string]Election // other groups, as gossiped
	seeds       []string            // initial members: --peer, or the watch file's lines
	haveMembers bool                // enough members known: seeds no longer pinged
	probes      map[string]Member   // members to probe before taking others' word they are dead
	inbox       []Election          // election rumors about the local group, for elect

	// suspicion is how long a member stays Suspect before it is Confirmed: the double's
	// own timer (butterfly's), memberlist declaring unreachable members dead at once.
	suspicion time.Duration

	departing atomic.Bool // SIGTERM: rumors of its own departure are expected, not refuted
	// nodes is memberlist's member count for the broadcast queue, kept here: memberlist calls
	// its event delegates with its node lock held, and those queue broadcasts, so the queue
	// must never ask memberlist (NumMembers takes that lock: a lock-order deadlock).
	nodes atomic.Int64

	fatal   chan error
	stop    chan struct{}
	stopped sync.Once
	wg      sync.WaitGroup
}

// Start runs a Supervisor until Depart, Kill or a fatal error (Done).
func Start(ctx context.Context, opts Options, log *slog.Logger) (*Supervisor, error) {
	id, err := memberID(opts.SupRoot)
	if err != nil {
		return nil, err
	}
	ip := opts.SysIP
	if !ip.IsValid() {
		ip = opts.ListenGossip.Addr()
	}
	hostname := opts.Hostname
	if hostname == "" {
		hostname, _ = os.Hostname()
	}
	self := Member{ID: id, IP: ip.String(), GossipPort: int(opts.ListenGossip.Port()), Incarnation: 1, Permanent: opts.Permanent,
		Service: opts.Service, Group: opts.Group, Topology: opts.Topology, Package: opts.Package, Hostname: hostname}
	log = log.With("member", id)
	var svc *Service
	if opts.PlanDir != "" {
		if svc, err = newService(opts, log); err != nil {
			return nil, err
		}
		self.Cfg = svc.exported
	}
	s := &Supervisor{opts: opts, log: log, table: NewTable(self, time.Now), elections: map[string]Election{}, probes: map[string]Member{}, svc: svc,
		election: Election{Group: opts.ServiceGroup(), Status: ElectionNone}, seeds: opts.Peers,
		fatal: make(chan error, 1), stop: make(chan struct{})}

	cfg := memberlist.DefaultLocalConfig()
	cfg.Name = id
	cfg.BindAddr, cfg.BindPort = opts.ListenGossip.Addr().String(), int(opts.ListenGossip.Port())
	cfg.AdvertiseAddr, cfg.AdvertisePort = self.IP, self.GossipPort
	s.suspicion = timers(cfg, opts.FastTimers)
	// Butterfly sends nothing to a Confirmed member that is not permanent (its pingable
	// and push targets); memberlist would keep gossiping to the dead for a while.
	cfg.GossipToTheDeadTime = 0
	cfg.Delegate, cfg.Events = (*delegate)(s), (*events)(s)
	cfg.Logger = slog.NewLogLogger(s.log.Handler(), slog.LevelDebug)
	if opts.RingKey != "" {
		// HAB_RING_KEY: members with another key (or none) can neither read nor be read.
		key := sha256.Sum256([]byte(opts.RingKey))
		cfg.SecretKey = key[:]
	}
	if s.ml, err = memberlist.Create(cfg); err != nil {
		return nil, fmt.Errorf("gossip on %s: %w", opts.ListenGossip, err)
	}
	s.nodes.Store(1)
	s.queue = &memberlist.TransmitLimitedQueue{NumNodes: func() int { return int(s.nodes.Load()) }, RetransmitMult: 3}

	ln, err := net.Listen("tcp", opts.ListenHTTP)
	if err != nil {
		_ = s.ml.Shutdown()
		return nil, fmt.Errorf("http gateway on %s: %w", opts.ListenHTTP, err)
	}
	s.http = &http.Server{Handler: s.Gateway(), ReadHeaderTimeout: 5 * time.Second}
	s.wg.Go(func() { _ = s.http.Serve(ln) })
	s.wg.Go(s.seed) // at once, then every second, as butterfly's outbound loop does
	s.loop(time.Second, s.seed)
	s.loop(2*time.Second, s.retry)
	s.loop(500*time.Millisecond, s.expire)
	s.wg.Go(func() { s.probeRounds(cfg.ProbeInterval, cfg.ProbeTimeout) })
	if opts.Topology == "leader" {
		s.loop(100*time.Millisecond, s.elect())
	}
	if svc != nil {
		s.loop(time.Second, s.tickService) // the Supervisor's main loop runs once a second
		s.wg.Go(s.checkHealth)
	}
	if opts.PeerWatchFile != "" {
		if err := s.watchFile(); err != nil {
			s.Kill()
			return nil, err
		}
	}
	s.log.Info("started", "gossip", opts.ListenGossip.String(), "ip", self.IP, "peers", opts.Peers, "service", opts.ServiceGroup(), "topology", opts.Topology)
	return s, nil
}

// timers sets failure detection to butterfly's (components/butterfly/src/server/
// timing.rs) and returns the suspicion timeout: a probe waits 1 s for an ack, then 2.1 s
// for the acks of ping-reqs through 5 others, one member probed per 3.1 s period; a member
// that fails its probe is Suspect, and Confirmed 3 periods (9.3 s) later unless it refutes;
// gossip every second to 5 members; no Lifeguard stretching (butterfly has none).
// Memberlist keeps no public suspect state (Members() reports everyone alive), so it is
// told to declare a failed probe dead at once (SuspicionMult 0) and the double keeps the
// suspicion itself (expire). With fast, sub-second timers for unit tests of the double.
func timers(cfg *memberlist.Config, fast bool) time.Duration {
	cfg.SuspicionMult, cfg.SuspicionMaxTimeoutMult, cfg.AwarenessMaxMultiplier = 0, 1, 1
	if fast {
		cfg.ProbeInterval, cfg.ProbeTimeout = 500*time.Millisecond, 250*time.Millisecond
		cfg.GossipInterval, cfg.PushPullInterval = 100*time.Millisecond, 2*time.Second
		return time.Second
	}
	cfg.ProbeInterval, cfg.ProbeTimeout, cfg.IndirectChecks = 3100*time.Millisecond, time.Second, 5
	cfg.GossipInterval, cfg.GossipNodes, cfg.PushPullInterval = time.Second, 5, 2*time.Second
	return 9300 * time.Millisecond
}

// memberID reads <root>/MEMBER_ID, or makes and keeps a new one: a fresh filesystem is a
// new member (sup/src/manager.rs MEMBER_ID_FILE).
func memberID(root string) (string, error) {
	path := filepath.Join(root, "MEMBER_ID")
	if b, err := os.ReadFile(path); err == nil && len(strings.TrimSpace(string(b))) == 32 {
		return strings.TrimSpace(string(b)), nil
	}
	raw := make([]byte, 16)
	if _, err := rand.Read(raw); err != nil {
		return "", err
	}
	id := hex.EncodeToString(raw)
	if err := os.MkdirAll(root, 0o755); err != nil {
		return "", fmt.Errorf("supervisor root: %w", err)
	}
	if err := os.WriteFile(path, []byte(id), 0o644); err != nil {
		return "", fmt.Errorf("member id: %w", err)
	}
	return id, nil
}

func (s *Supervisor) loop(every time.Duration, f func()) {
	s.wg.Go(func() {
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-s.stop:
				return
			case <-t.C:
				f()
			}
		}
	})
}

// Done reports a fatal error (ErrDeparted): the process must exit non-zero.
func (s *Supervisor) Done() <-chan error { return s.fatal }

// ID is the local member id.
func (s *Supervisor) ID() string { return s.table.Self().ID }

// Depart is SIGTERM: the member tells the ring it departs ("Gracefully departing from
// butterfly network"), then stops.
func (s *Supervisor) Depart(timeout time.Duration) error {
	s.departing.Store(true)
	self := s.table.Self()
	self.Health = Departed
	s.table.SetSelf(self)
	s.broadcast(rumor{Member: &self})
	// Gossip alone goes out once a second: a Supervisor that stops right after could leave
	// before its departure did, and be taken for dead (Suspect, then Confirmed and counted
	// in the quorum). The real one keeps gossiping while it stops its services; the double
	// tells every member it reaches directly.
	if b, err := json.Marshal(rumor{Member: &self}); err == nil {
		for _, n := range s.ml.Members() {
			if n.Name != self.ID {
				if err := s.ml.SendReliable(n, b); err != nil {
					s.log.Warn("departure not sent", "to", n.Name, "err", err)
				}
			}
		}
	}
	err := s.ml.Leave(timeout)
	// Departed first, then the services stopped: manager.rs's shutdown does it in this
	// order, so the ring elects a new leader while the old one's service still runs.
	if s.svc != nil {
		s.svc.Stop()
	}
	s.Kill()
	return err
}

// Kill stops without a word to the ring, as SIGKILL does: the others find it dead, and it
// stays Confirmed until the departure timeout.
func (s *Supervisor) Kill() {
	s.stopped.Do(func() {
		close(s.stop)
		_ = s.ml.Shutdown()
		_ = s.http.Close()
		s.wg.Wait()
		if s.svc != nil {
			s.svc.kill() // what Pdeathsig does to it when the process dies
		}
	})
}

// seed pings the initial members until the ring holds at least half of them plus one
// (butterfly/src/server/outbound.rs: min_to_start = num_initial / 2 + 1).
func (s *Supervisor) seed() {
	s.mu.Lock()
	seeds, have := s.seeds, s.haveMembers
	if len(seeds) == 0 || have {
		s.mu.Unlock()
		return
	}
	if s.table.Others() >= len(seeds)/2+1 {
		s.haveMembers = true
		s.mu.Unlock()
		return
	}
	s.mu.Unlock()
	if n, err := s.ml.Join(seeds); err != nil {
		s.log.Debug("initial peers not reached yet", "peers", seeds, "reached", n, "err", err)
	}
}

// retry keeps pinging suspects (butterfly pings them like the alive: memberlist, which
// the double lets declare them dead at once, would not) and Confirmed permanent members at
// their last known address (butterfly persistent_and_confirmed): a member re-created
// elsewhere is not found so.
func (s *Supervisor) retry() {
	s.nodes.Store(int64(s.ml.NumMembers()))
	for _, m := range s.table.All() {
		if m.ID != s.ID() && (m.Health == Suspect || m.Permanent && m.Health == Confirmed) {
			_, _ = s.ml.Join([]string{net.JoinHostPort(m.IP, strconv.Itoa(m.GossipPort))})
		}
	}
}

// expire confirms suspects once the suspicion timeout passed and departs members
// Confirmed for the departure timeout (butterfly's expire loop, every 0.5 s).
func (s *Supervisor) expire() {
	for _, m := range s.table.Expire(s.suspicion, s.opts.DepartureTimeout) {
		if m.Health == Departed {
			s.log.Info("member departed after the departure timeout", "id", m.ID)
		}
		s.broadcast(rumor{Member: &m})
	}
}

// elect runs the local member's election: it takes the election rumors gossip brought
// since the last step (takeElection only queues them: starting a term runs the
// suitability hook, which must not hold up memberlist's message handler), then advances
// the term from this member's view, and gossips the election whenever it changed.
func (s *Supervisor) elect() func() {
	return func() {
		if s.departing.Load() {
			// manager.rs leaves its main loop, where elections are restarted, before it
			// marks the member departed: a departing leader starts no new term (it would
			// put in the highest suitability and stall the term once it is gone).
			return
		}
		s.mu.Lock()
		e, inbox := s.election, s.inbox
		s.inbox = nil
		s.mu.Unlock()
		b := ballot{self: s.ID(), members: s.table.All(), suitability: s.suitability}
		before, gossip := e, false
		for _, r := range inbox {
			var changed bool
			if e, changed = b.receive(e, r); changed {
				gossip = true
			}
		}
		var changed bool
		if e, changed = b.tick(e); changed {
			gossip = true
		}
		s.mu.Lock()
		s.election = e
		s.mu.Unlock()
		if before.Shown() != e.Shown() || before.LeaderID != e.LeaderID || before.Term != e.Term {
			s.log.Info("election", "group", e.Group, "term", e.Term, "status", e.Shown(), "leader", e.LeaderID,
				"candidate", e.Candidate, "votes", len(e.Votes))
		}
		if e.Candidate == s.ID() && e.Suitability != s.table.Self().Suitability {
			s.setSuitability(e.Suitability)
		}
		if gossip {
			s.broadcast(rumor{Election: &e})
		}
	}
}

// suitability asks the service's suitability hook, as a member starting a term does
// (butterfly start_election, Service::suitability).
func (s *Supervisor) suitability() uint64 {
	if s.svc == nil {
		return 0
	}
	return s.svc.Suitability()
}

// setSuitability puts the suitability this member last put into an election into its
// gossiped record, where the census shows it.
func (s *Supervisor) setSuitability(n uint64) {
	self := s.table.UpdateSelf(func(m *Member) { m.Suitability = n })
	s.log.Info("suitability", "value", n)
	s.broadcast(rumor{Member: &self})
	s.wg.Go(func() {
		select {
		case <-s.stop:
		default:
			_ = s.ml.UpdateNode(time.Second)
		}
	})
}

// tickService renders the service's templates against this member's census and executes
// its hooks as the election allows (Service::tick).
func (s *Supervisor) tickService() {
	if s.departing.Load() {
		return // the main loop has ended: Depart stops the service
	}
	c := s.Census()
	g := c.CensusGroups[s.opts.ServiceGroup()]
	s.svc.tick(s.svc.renderContext(s.opts, s.table.Self(), g), s.opts.Topology, g.ElectionStatus)
}

// checkHealth runs the health check every --health-check-interval, the first right away.
func (s *Supervisor) checkHealth() {
	for {
		s.svc.checkHealth()
		select {
		case <-s.stop:
			return
		case <-time.After(s.opts.HealthCheckInterval):
		}
	}
}

// watchFile reads --peer-watch-file at start and on every change of it, but only while
// this member knows no other member (sup/src/manager.rs, butterfly need_peer_seeding).
func (s *Supervisor) watchFile() error {
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return fmt.Errorf("watch %s: %w", s.opts.PeerWatchFile, err)
	}
	if err := w.Add(filepath.Dir(s.opts.PeerWatchFile)); err != nil {
		_ = w.Close()
		return fmt.Errorf("watch %s: %w", s.opts.PeerWatchFile, err)
	}
	s.readWatchFile()
	s.wg.Go(func() {
		defer func() { _ = w.Close() }()
		for {
			select {
			case <-s.stop:
				return
			case ev := <-w.Events:
				if filepath.Clean(ev.Name) == filepath.Clean(s.opts.PeerWatchFile) {
					s.readWatchFile()
				}
			case err := <-w.Errors:
				s.log.Debug("peer watch file: watch error", "err", err)
			}
		}
	})
	return nil
}

func (s *Supervisor) readWatchFile() {
	if s.table.Others() > 0 {
		return // a member that knows anyone, even a dead one, ignores the file
	}
	f, err := os.Open(s.opts.PeerWatchFile)
	if err != nil {
		return
	}
	defer func() { _ = f.Close() }()
	var peers []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		addr, err := ResolvePeer(context.Background(), line, net.DefaultResolver)
		if err != nil {
			s.log.Warn("peer watch file: line skipped", "line", line, "err", err)
			continue
		}
		peers = append(peers, addr)
	}
	s.mu.Lock()
	s.seeds, s.haveMembers = peers, false
	s.mu.Unlock()
	s.log.Info("peer watch file read", "peers", peers)
	s.seed()
}

// rumor is what the double gossips beside memberlist's own messages: butterfly's member
// and election rumors.
type rumor struct {
	Member   *Member   `json:"member,omitempty"`
	Election *Election `json:"election,omitempty"`
}

func (s *Supervisor) broadcast(r rumor) {
	b, err := json.Marshal(r)
	if err != nil {
		return
	}
	s.queue.QueueBroadcast(broadcast(b))
}

type broadcast []byte

func (b broadcast) Invalidates(memberlist.Broadcast) bool { return false }
func (b broadcast) Message() []byte                       { return b }
func (b broadcast) Finished()                             {}

// take merges a rumor about a member, passes it on when it changed the view, and answers
// rumors about the local member: a refutation for suspect or confirmed, shutdown for
// departed. A Confirmed rumor about a member held alive waits for the next probe round.
func (s *Supervisor) take(m Member) {
	switch s.table.Merge(m) {
	case Ignored:
	case Changed:
		s.log.Debug("member", "id", m.ID, "health", m.Health.String(), "incarnation", m.Incarnation)
		s.broadcast(rumor{Member: &m})
	case Probe:
		s.mu.Lock()
		s.probes[m.ID] = m
		s.mu.Unlock()
	case Shutdown:
		if s.departing.Load() {
			return
		}
		select {
		case s.fatal <- ErrDeparted:
		default:
		}
	case Refute:
		if s.departing.Load() {
			return
		}
		self := s.table.Refute(m.Incarnation)
		s.log.Info("refuting a rumor about this member", "health", m.Health.String(), "incarnation", self.Incarnation)
		s.broadcast(rumor{Member: &self})
		// memberlist calls its event delegates with its node lock held: update the
		// advertised record outside of this call.
		s.wg.Go(func() {
			select {
			case <-s.stop:
			default:
				_ = s.ml.UpdateNode(time.Second)
			}
		})
	}
}

// probeRounds pings, at the start of every probe round, the members others said were
// Confirmed while this view held them alive: one that answers stays alive, one that does
// not is Confirmed here too (butterfly's probe list, outbound.rs run_loop). A round is one
// probe period per pingable member, as butterfly walks its whole check list in one.
func (s *Supervisor) probeRounds(period, timeout time.Duration) {
	for {
		round := period * time.Duration(max(1, s.table.Pingable()))
		select {
		case <-s.stop:
			return
		case <-time.After(round):
		}
		s.mu.Lock()
		probes := s.probes
		s.probes = map[string]Member{}
		s.mu.Unlock()
		for _, m := range probes {
			addr := &net.UDPAddr{IP: net.ParseIP(m.IP), Port: m.GossipPort}
			if _, err := s.ml.Ping(m.ID, addr); err == nil {
				if s.table.MarkAlive(m.ID) {
					if cur, ok := s.table.Get(m.ID); ok {
						s.broadcast(rumor{Member: &cur})
					}
				}
				continue
			}
			s.log.Info("a member others confirmed did not answer its probe", "id", m.ID, "timeout", timeout.String())
			if s.table.Confirm(m) == Changed {
				m.Health = Confirmed
				s.broadcast(rumor{Member: &m})
			}
		}
	}
}

func (s *Supervisor) takeElection(e Election) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if e.Group == s.election.Group && s.opts.Topology == "leader" {
		s.inbox = append(s.inbox, e)
		return
	}
	if e.Status == ElectionFinished { // other groups are seen only through their results
		s.elections[e.Group], _ = s.elections[e.Group].merge(e)
	}
}

// fromNode reads a member's record from its memberlist metadata.
func (s *Supervisor) fromNode(n *memberlist.Node, h Health) (Member, bool) {
	var m Member
	if err := json.Unmarshal(n.Meta, &m); err != nil || m.ID != n.Name {
		return m, false
	}
	m.Health = h
	return m, true
}

// delegate and events are the Supervisor as memberlist's callbacks.
type (
	delegate Supervisor
	events   Supervisor
)

func (d *delegate) NodeMeta(int) []byte {
	b, _ := json.Marshal((*Supervisor)(d).table.Self())
	return b
}

func (d *delegate) NotifyMsg(b []byte) {
	s := (*Supervisor)(d)
	var r rumor
	if json.Unmarshal(b, &r) != nil {
		return
	}
	if r.Member != nil {
		s.take(*r.Member)
	}
	if r.Election != nil {
		s.takeElection(*r.Election)
	}
}

func (d *delegate) GetBroadcasts(overhead, limit int) [][]byte {
	return (*Supervisor)(d).queue.GetBroadcasts(overhead, limit)
}

type state struct {
	Members   []Member   `json:"members"`
	Elections []Election `json:"elections"`
}

func (d *delegate) LocalState(bool) []byte {
	s := (*Supervisor)(d)
	st := state{Members: s.table.All()}
	s.mu.Lock()
	if s.election.Status != ElectionNone {
		st.Elections = append(st.Elections, s.election)
	}
	for _, e := range s.elections {
		st.Elections = append(st.Elections, e)
	}
	s.mu.Unlock()
	b, _ := json.Marshal(st)
	return b
}

func (d *delegate) MergeRemoteState(b []byte, _ bool) {
	s := (*Supervisor)(d)
	var st state
	if json.Unmarshal(b, &st) != nil {
		return
	}
	for _, m := range st.Members {
		s.take(m)
	}
	for _, e := range st.Elections {
		s.takeElection(e)
	}
}

func (e *events) NotifyJoin(n *memberlist.Node) {
	s := (*Supervisor)(e)
	if m, ok := s.fromNode(n, Alive); ok {
		s.take(m)
	}
}

func (e *events) NotifyUpdate(n *memberlist.Node) { e.NotifyJoin(n) }

// NotifyLeave is memberlist's word that a member failed its probe (or left: memberlist
// does not say which to its event delegate; a departure arrives as the member's own
// Departed rumor, which is worse news and wins). The member is Suspect until expire
// confirms it or it refutes.
func (e *events) NotifyLeave(n *memberlist.Node) {
	s := (*Supervisor)(e)
	if m, ok := s.fromNode(n, Suspect); ok {
		s.take(m)
	}
}
