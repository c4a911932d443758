package supervisor

import (
	"crypto/subtle"
	"encoding/json"
	"net/http"
	"strings"
)

// Gateway serves the HTTP gateway routes habring reads: GET /census (the upstream schema,
// components/sup/doc/http_gateway_census_schema.json) and GET /butterfly (the member
// list). With HAB_SUP_GATEWAY_AUTH_TOKEN set every route needs "Authorization: Bearer
// <token>", as the real gateway does.
func (s *Supervisor) Gateway() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /census", func(w http.ResponseWriter, _ *http.Request) { writeJSON(w, s.Census()) })
	mux.HandleFunc("GET /butterfly", func(w http.ResponseWriter, _ *http.Request) { writeJSON(w, s.Butterfly()) })
	mux.HandleFunc("GET /services", func(w http.ResponseWriter, _ *http.Request) {
		out := []ServiceStatus{}
		if s.svc != nil {
			out = append(out, s.svc.Status())
		}
		writeJSON(w, out)
	})
	service := func(w http.ResponseWriter, r *http.Request) (ServiceStatus, bool) {
		if s.svc == nil || r.PathValue("svc")+"."+r.PathValue("group") != s.opts.ServiceGroup() {
			http.Error(w, "", http.StatusNotFound)
			return ServiceStatus{}, false
		}
		return s.svc.Status(), true
	}
	mux.HandleFunc("GET /services/{svc}/{group}", func(w http.ResponseWriter, r *http.Request) {
		if st, ok := service(w, r); ok {
			writeJSON(w, st)
		}
	})
	// The health route answers 200 for ok and warning, 503 critical, 500 unknown
	// (components/sup/src/http_gateway.rs).
	mux.HandleFunc("GET /services/{svc}/{group}/health", func(w http.ResponseWriter, r *http.Request) {
		st, ok := service(w, r)
		if !ok {
			return
		}
		code := map[string]int{HealthOk: 200, HealthWarning: 200, HealthCritical: 503}[st.HealthCheck]
		if code == 0 {
			code = http.StatusInternalServerError
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(code)
		_ = json.NewEncoder(w).Encode(map[string]string{"status": strings.ToUpper(st.HealthCheck), "stdout": "", "stderr": ""})
	})
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if tok := s.opts.GatewayToken; tok != "" {
			got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
			if !ok || subtle.ConstantTimeCompare([]byte(got), []byte(tok)) != 1 {
				http.Error(w, "", http.StatusUnauthorized)
				return
			}
		}
		mux.ServeHTTP(w, r)
	})
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(v)
}

// Census is GET /census: the fields of the upstream serializers (census.rs CensusRingProxy,
// CensusGroup, CensusMemberProxy) that the schema names.
type Census struct {
	Changed       bool                   `json:"changed"`
	CensusGroups  map[string]CensusGroup `json:"census_groups"`
	LastElection  uint64                 `json:"last_election_counter"`
	LastMembers   uint64                 `json:"last_membership_counter"`
	LastService   uint64                 `json:"last_service_counter"`
	LocalMemberID string                 `json:"local_member_id"`
}

// CensusGroup is one service group.
type CensusGroup struct {
	ServiceGroup         string                  `json:"service_group"`
	ElectionStatus       string                  `json:"election_status"`
	UpdateElectionStatus string                  `json:"update_election_status"`
	LeaderID             *string                 `json:"leader_id"`
	ServiceConfig        any                     `json:"service_config"`
	LocalMemberID        string                  `json:"local_member_id"`
	Population           map[string]CensusMember `json:"population"`
	UpdateLeaderID       *string                 `json:"update_leader_id"`
	ChangedServiceFiles  []string                `json:"changed_service_files"`
	ServiceFiles         map[string]any          `json:"service_files"`
}

// CensusMember is one member of a group as the census shows it.
type CensusMember struct {
	MemberID                 string         `json:"member_id"`
	Pkg                      map[string]any `json:"pkg"`
	Package                  string         `json:"package"`
	Service                  string         `json:"service"`
	Group                    string         `json:"group"`
	Org                      *string        `json:"org"`
	Persistent               bool           `json:"persistent"`
	Leader                   bool           `json:"leader"`
	Follower                 bool           `json:"follower"`
	UpdateLeader             bool           `json:"update_leader"`
	UpdateFollower           bool           `json:"update_follower"`
	ElectionIsRunning        bool           `json:"election_is_running"`
	ElectionIsNoQuorum       bool           `json:"election_is_no_quorum"`
	ElectionIsFinished       bool           `json:"election_is_finished"`
	UpdateElectionIsRunning  bool           `json:"update_election_is_running"`
	UpdateElectionIsNoQuorum bool           `json:"update_election_is_no_quorum"`
	UpdateElectionIsFinished bool           `json:"update_election_is_finished"`
	Sys                      map[string]any `json:"sys"`
	Alive                    bool           `json:"alive"`
	Suspect                  bool           `json:"suspect"`
	Confirmed                bool           `json:"confirmed"`
	Departed                 bool           `json:"departed"`
	Cfg                      map[string]any `json:"cfg"`
}

// Census builds GET /census from this member's view.
func (s *Supervisor) Census() Census {
	self := s.table.Self()
	c := Census{CensusGroups: map[string]CensusGroup{}, LocalMemberID: self.ID}
	s.mu.Lock()
	elections := map[string]Election{s.election.Group: s.election}
	for g, e := range s.elections {
		if g != s.election.Group {
			elections[g] = e
		}
	}
	s.mu.Unlock()
	for _, m := range s.table.All() {
		sg := m.ServiceGroup()
		g, ok := c.CensusGroups[sg]
		if !ok {
			e := elections[sg]
			g = CensusGroup{ServiceGroup: sg, ElectionStatus: ElectionNone, UpdateElectionStatus: ElectionNone, LocalMemberID: self.ID,
				Population: map[string]CensusMember{}, ChangedServiceFiles: []string{}, ServiceFiles: map[string]any{}}
			if e.Status != "" {
				g.ElectionStatus = e.Shown()
			}
			if e.LeaderID != "" {
				g.LeaderID = &e.LeaderID
			}
		}
		e := elections[sg]
		// The member flags are set only when an election finishes, and keep their values
		// while a new one runs, as upstream's are.
		leader := e.LeaderID != "" && e.LeaderID == m.ID && e.Term > 0
		g.Population[m.ID] = CensusMember{
			MemberID: m.ID, Package: m.Package, Service: m.Service, Group: m.Group, Persistent: m.Permanent,
			// `run <origin>/<name>` names no version or release: null, as the schema allows.
			Pkg:                map[string]any{"origin": strings.SplitN(m.Package, "/", 2)[0], "name": m.Service, "version": nil, "release": nil},
			Leader:             leader,
			Follower:           e.LeaderID != "" && !leader,
			ElectionIsRunning:  e.Shown() == ElectionInProgress,
			ElectionIsNoQuorum: e.Shown() == ElectionNoQuorum,
			ElectionIsFinished: e.Shown() == ElectionFinished,
			Sys: map[string]any{"ip": m.IP, "hostname": m.Hostname, "gossip_ip": m.IP, "gossip_port": m.GossipPort,
				"http_gateway_ip": "0.0.0.0", "http_gateway_port": 9631, "ctl_gateway_ip": "127.0.0.1", "ctl_gateway_port": 9632},
			Alive: m.Health == Alive, Suspect: m.Health == Suspect, Confirmed: m.Health == Confirmed, Departed: m.Health == Departed,
			Cfg: m.Cfg,
		}
		if m.Cfg == nil {
			cm := g.Population[m.ID]
			cm.Cfg = map[string]any{}
			g.Population[m.ID] = cm
		}
		c.CensusGroups[sg] = g
	}
	return c
}

// Butterfly is GET /butterfly: the member list and each member's health, as upstream's
// ("member": {"members": ..., "health": ...}).
type Butterfly struct {
	Member struct {
		Members map[string]ButterflyMember `json:"members"`
		Health  map[string]string          `json:"health"`
	} `json:"member"`
}

// ButterflyMember is one member of the list.
type ButterflyMember struct {
	ID          string `json:"id"`
	Incarnation uint64 `json:"incarnation"`
	Address     string `json:"address"`
	SwimPort    int    `json:"swim_port"`
	GossipPort  int    `json:"gossip_port"`
	Persistent  bool   `json:"persistent"`
	Departed    bool   `json:"departed"`
}

// Butterfly builds GET /butterfly.
func (s *Supervisor) Butterfly() Butterfly {
	var b Butterfly
	b.Member.Members, b.Member.Health = map[string]ButterflyMember{}, map[string]string{}
	for _, m := range s.table.All() {
		b.Member.Members[m.ID] = ButterflyMember{ID: m.ID, Incarnation: m.Incarnation, Address: m.IP, SwimPort: m.GossipPort,
			GossipPort: m.GossipPort, Persistent: m.Permanent, Departed: m.Health == Departed}
		b.Member.Health[m.ID] = strings.ToUpper(m.Health.String()[:1]) + m.Health.String()[1:]
	}
	return b
}
