package harness

import (
	"context"
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/redis/go-redis/v9"
)

// Redis is a client of one pod's redis-server, from this machine (the pod network is the
// runner's bridge). Retries are off: a test must see every failure as it happens
// (go-redis retries EOF, timeouts, READONLY and NOREPLICAS 3 times by default).
func Redis(ip, password string) *redis.Client {
	return redis.NewClient(&redis.Options{Addr: net.JoinHostPort(ip, "6379"), Password: password, MaxRetries: -1,
		DialTimeout: time.Second, ReadTimeout: 2 * time.Second, WriteTimeout: 2 * time.Second, PoolSize: 2})
}

// RedisRole is what ROLE says of a redis-server: master (with the replicas it has) or
// slave (of which master, in which link state), and its replication offset.
type RedisRole struct {
	Role     string   // "master" or "slave"
	Offset   int64    // the master's replication offset, or what the replica processed
	Master   string   // a replica's master, IP:port
	Link     string   // a replica's link: "connect", "connecting", "sync", "connected"
	Replicas []string // a master's replicas, IP:port
}

// String is the role as the demo table shows it.
func (r RedisRole) String() string {
	if r.Role == "master" {
		return fmt.Sprintf("master of %d", len(r.Replicas))
	}
	return fmt.Sprintf("replica of %s (%s)", r.Master, r.Link)
}

// Role asks a pod's redis-server for ROLE.
func Role(ctx context.Context, ip, password string) (RedisRole, error) {
	c := Redis(ip, password)
	defer func() { _ = c.Close() }()
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	v, err := c.Do(ctx, "ROLE").Slice()
	if err != nil {
		return RedisRole{}, err
	}
	if len(v) == 0 {
		return RedisRole{}, errors.New("ROLE: empty reply")
	}
	r := RedisRole{Role: fmt.Sprint(v[0])}
	switch {
	case r.Role == "master" && len(v) >= 3:
		r.Offset, _ = v[1].(int64)
		replicas, _ := v[2].([]any)
		for _, x := range replicas {
			if rep, ok := x.([]any); ok && len(rep) >= 2 {
				r.Replicas = append(r.Replicas, net.JoinHostPort(fmt.Sprint(rep[0]), fmt.Sprint(rep[1])))
			}
		}
	case r.Role == "slave" && len(v) >= 5:
		port, _ := v[2].(int64)
		r.Master, r.Link = net.JoinHostPort(fmt.Sprint(v[1]), fmt.Sprint(port)), fmt.Sprint(v[3])
		r.Offset, _ = v[4].(int64)
	default:
		return r, fmt.Errorf("ROLE: unexpected reply %v", v)
	}
	return r, nil
}
