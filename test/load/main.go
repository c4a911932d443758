// Command load measures habring's admission server over TLS on loopback: requests per
// second at saturation (keep-alive connections, closed loop) and latency percentiles at a
// fixed rate (open loop: each request timed from when it was due, so queueing counts),
// for habring and for the echo floor (decode and allow) in the same run.
//
//	go run ./test/load -duration 10s -rate 1000 -conns 16
//
// Both servers run in this process with the real router, handler and informer-backed
// cache (on client-go's fake clientsets), so the 2 cores are shared by servers and load,
// as a webhook shares a node. Traffic goes only to 127.0.0.1; every loop is bounded.
package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"runtime/pprof"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"text/tabwriter"
	"time"

	admissionv1 "k8s.io/api/admission/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes/fake"
	metadatafake "k8s.io/client-go/metadata/fake"
	"k8s.io/utils/ptr"

	"github.com/habring/habring/contract"
	"github.com/habring/habring/internal/patch"
	"github.com/habring/habring/internal/ring"
	"github.com/habring/habring/internal/webhook"
	"github.com/habring/habring/test/echo"
	"github.com/habring/habring/test/pki"
)

func main() {
	duration := flag.Duration("duration", 10*time.Second, "length of each phase (at most 60s)")
	rate := flag.Int("rate", 1000, "requests per second for the fixed-rate phase (at most 20000)")
	conns := flag.Int("conns", 16, "keep-alive connections (and workers) for the saturation phase (at most 256)")
	rounds := flag.Int("rounds", 4, "saturation rounds per server, alternating habring and the floor (each duration/rounds)")
	cpuProfile := flag.String("cpuprofile", "", "write a CPU profile of the saturation phases (the whole process: servers and load) to this file")
	flag.Parse()
	if *duration <= 0 || *duration > time.Minute || *rate <= 0 || *rate > 20000 || *conns <= 0 || *conns > 256 || *rounds <= 0 || *rounds > 20 {
		fmt.Fprintln(os.Stderr, "load: -duration must be in (0, 60s], -rate in (0, 20000], -conns in (0, 256], -rounds in (0, 20]")
		os.Exit(2)
	}
	if err := run(*duration, *rate, *conns, *rounds, *cpuProfile); err != nil {
		fmt.Fprintln(os.Stderr, "load:", err)
		os.Exit(1)
	}
}

type result struct {
	name                 string
	satRPS               float64
	satOK, satErrors     int64
	p50, p90, p99, p999  time.Duration
	fixedSent, fixedErrs int64
}

func run(d time.Duration, rate, conns, rounds int, cpuProfile string) error {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ca, err := pki.NewCA("load-ca", time.Hour)
	if err != nil {
		return err
	}
	crt, key, err := ca.Issue([]string{"127.0.0.1"}, time.Now().Add(-time.Minute), time.Hour)
	if err != nil {
		return err
	}
	pair, err := tls.X509KeyPair(crt, key)
	if err != nil {
		return err
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca.Cert)

	habring, err := habringHandler(ctx)
	if err != nil {
		return err
	}
	body, err := review()
	if err != nil {
		return err
	}
	servers := []struct {
		name string
		h    http.Handler
	}{{"habring", habring}, {"echo floor", http.HandlerFunc(echo.Handler)}}
	results := make([]result, len(servers))
	addrs := make([]string, len(servers))
	for i, srv := range servers {
		addr, stop, err := serve(srv.h, pair)
		if err != nil {
			return err
		}
		defer stop()
		addrs[i], results[i].name = addr, srv.name
	}
	// Saturation in alternating rounds (habring, floor, habring, floor, ...): this machine's
	// speed drifts (other tenants, frequency), and the ratio should not depend on which
	// server ran while it was fast.
	stopProfile, err := profile(cpuProfile)
	if err != nil {
		return err
	}
	elapsed := make([]time.Duration, len(servers))
	var roundRatios []string
	for round := range rounds {
		var rps [2]float64
		for i := range servers {
			fmt.Fprintf(os.Stderr, "load: round %d/%d: %s: saturation with %d connections for %s\n", round+1, rounds, servers[i].name, conns, d/time.Duration(rounds))
			ok, errs, took := saturate(addrs[i], pool, body, conns, d/time.Duration(rounds))
			results[i].satOK += ok
			results[i].satErrors += errs
			elapsed[i] += took
			rps[i] = float64(ok) / took.Seconds()
		}
		roundRatios = append(roundRatios, fmt.Sprintf("%.2f", rps[0]/rps[1]))
	}
	stopProfile()
	for i := range servers {
		results[i].satRPS = float64(results[i].satOK) / elapsed[i].Seconds()
		fmt.Fprintf(os.Stderr, "load: %s: %d req/s for %s\n", servers[i].name, rate, d)
		r := &results[i]
		r.p50, r.p90, r.p99, r.p999, r.fixedSent, r.fixedErrs = fixedRate(addrs[i], pool, body, rate, d)
	}
	tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "server\tsaturation req/s\terrors\tat %d req/s: p50\tp90\tp99\tp99.9\tsent\terrors\n", rate)
	for _, r := range results {
		fmt.Fprintf(tw, "%s\t%.0f\t%d\t%s\t%s\t%s\t%s\t%d\t%d\n", r.name, r.satRPS, r.satErrors, r.p50, r.p90, r.p99, r.p999, r.fixedSent, r.fixedErrs)
	}
	_ = tw.Flush()
	fmt.Printf("habring / echo floor throughput: %.2f (rounds: %s)\n", results[0].satRPS/results[1].satRPS, strings.Join(roundRatios, " "))
	return nil
}

// profile starts a CPU profile into path when it is set; the returned func stops it.
func profile(path string) (func(), error) {
	if path == "" {
		return func() {}, nil
	}
	f, err := os.Create(path)
	if err != nil {
		return nil, err
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		_ = f.Close()
		return nil, err
	}
	return func() { pprof.StopCPUProfile(); _ = f.Close() }, nil
}

// habringHandler is habring's router and handler over a ring of 3 live StatefulSet pods.
func habringHandler(ctx context.Context) (http.Handler, error) {
	ready := true
	sts := &appsv1.StatefulSet{
		ObjectMeta: metav1.ObjectMeta{Name: "db", Namespace: "shop", Annotations: map[string]string{contract.AnnotationRing: "main", contract.AnnotationTopology: "leader"}},
		Spec:       appsv1.StatefulSetSpec{ServiceName: "db", Replicas: ptr.To[int32](3)},
	}
	slice := &discoveryv1.EndpointSlice{ObjectMeta: metav1.ObjectMeta{Name: "db-x", Namespace: "shop", Labels: map[string]string{contract.LabelRing: "main"}},
		AddressType: discoveryv1.AddressTypeIPv4}
	for i := range 3 {
		slice.Endpoints = append(slice.Endpoints, discoveryv1.Endpoint{Addresses: []string{fmt.Sprintf("10.0.0.%d", 10+i)},
			Conditions: discoveryv1.EndpointConditions{Ready: &ready}, TargetRef: &corev1.ObjectReference{Kind: "Pod", Name: fmt.Sprintf("db-%d", i)}})
	}
	scheme := metadatafake.NewTestScheme()
	if err := metav1.AddMetaToScheme(scheme); err != nil {
		return nil, err
	}
	m := webhook.NewMetrics()
	c, err := ring.NewCache(fake.NewClientset([]runtime.Object{sts, slice}...), metadatafake.NewSimpleMetadataClient(scheme))
	if err != nil {
		return nil, err
	}
	c.Start(ctx)
	if !c.WaitForSync(ctx) {
		return nil, errors.New("caches did not sync")
	}
	log := slog.New(slog.DiscardHandler)
	h := &webhook.Handler{Source: c, Metrics: m, Log: log, Timeout: 5 * time.Second,
		Injector: patch.NewInjector(patch.Options{LabelerImage: "habring:load", NativeSidecar: true})}
	return webhook.NewRouter(h, func() error { return nil }, m, log), nil
}

// review is a typical ring pod's AdmissionReview: pod 3 of the StatefulSet.
func review() ([]byte, error) {
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "db-3", Namespace: "shop", Labels: map[string]string{"app": "db", "apps.kubernetes.io/pod-index": "3"},
			OwnerReferences: []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: "StatefulSet", Name: "db", Controller: ptr.To(true)}}},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "db", Image: "habitat/postgresql:latest",
			Ports: []corev1.ContainerPort{{ContainerPort: 5432}}}}},
	}
	raw, err := json.Marshal(pod)
	if err != nil {
		return nil, err
	}
	return json.Marshal(admissionv1.AdmissionReview{
		TypeMeta: metav1.TypeMeta{APIVersion: "admission.k8s.io/v1", Kind: "AdmissionReview"},
		Request: &admissionv1.AdmissionRequest{UID: types.UID("load"), Kind: metav1.GroupVersionKind{Version: "v1", Kind: "Pod"},
			Resource: metav1.GroupVersionResource{Version: "v1", Resource: "pods"}, Namespace: "shop", Operation: admissionv1.Create,
			Object: runtime.RawExtension{Raw: raw}},
	})
}

// serve runs h behind the webhook's own server (webhook.NewServer with its defaults: the
// same timeouts, connection cap and HTTP/1.1), so both sides are measured as deployed.
func serve(h http.Handler, pair tls.Certificate) (string, func(), error) {
	raw, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", nil, err
	}
	mux := http.NewServeMux()
	mux.Handle("/mutate", h)
	srv, ln := webhook.NewServer(webhook.Defaults(), raw, func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return &pair, nil },
		mux, slog.New(slog.DiscardHandler))
	go func() { _ = srv.Serve(ln) }()
	return "https://" + raw.Addr().String() + "/mutate", func() { _ = srv.Close() }, nil
}

func client(pool *x509.CertPool, conns int) *http.Client {
	return &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12},
		MaxIdleConns:    conns, MaxIdleConnsPerHost: conns, MaxConnsPerHost: conns,
		DialContext:       (&net.Dialer{Timeout: time.Second}).DialContext,
		ForceAttemptHTTP2: false,
	}}
}

func do(c *http.Client, url string, body []byte) error {
	resp, err := c.Post(url, "application/json", bytes.NewReader(body))
	if err != nil {
		return err
	}
	defer func() { _ = resp.Body.Close() }()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK || !bytes.Contains(b, []byte(`"allowed":true`)) {
		return fmt.Errorf("status %d: %.200s", resp.StatusCode, b)
	}
	return nil
}

// saturate runs conns closed-loop workers for d and returns the requests answered, the
// errors, and how long it took.
func saturate(url string, pool *x509.CertPool, body []byte, conns int, d time.Duration) (ok, errs int64, took time.Duration) {
	c := client(pool, conns)
	// Warm the connections and the caches' first hit.
	for range conns {
		_ = do(c, url, body)
	}
	var okN, errN atomic.Int64
	deadline := time.Now().Add(d)
	start := time.Now()
	var wg sync.WaitGroup
	for range conns {
		wg.Go(func() {
			for time.Now().Before(deadline) {
				if do(c, url, body) != nil {
					errN.Add(1)
				} else {
					okN.Add(1)
				}
			}
		})
	}
	wg.Wait()
	c.CloseIdleConnections()
	return okN.Load(), errN.Load(), time.Since(start)
}

// fixedRate sends rate requests/s for d (open loop) and returns latency percentiles,
// each measured from the moment the request was due.
func fixedRate(url string, pool *x509.CertPool, body []byte, rate int, d time.Duration) (p50, p90, p99, p999 time.Duration, sent, errs int64) {
	const workers = 64
	c := client(pool, workers)
	// Every connection open before the clock starts, as the API server keeps its
	// connections to a webhook: a TLS handshake in the measured second is the load
	// generator's cost, and a latency spike that makes it open more compounds.
	var warm sync.WaitGroup
	for range workers {
		warm.Go(func() { _ = do(c, url, body) })
	}
	warm.Wait()
	due := make(chan time.Time, rate)
	var mu sync.Mutex
	lat := make([]time.Duration, 0, rate*int(d/time.Second+1))
	var nerr atomic.Int64
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for t := range due {
				err := do(c, url, body)
				l := time.Since(t)
				if err != nil {
					nerr.Add(1)
					continue
				}
				mu.Lock()
				lat = append(lat, l)
				mu.Unlock()
			}
		})
	}
	interval := time.Second / time.Duration(rate)
	start := time.Now()
	n := int64(d / interval)
	for i := range n {
		t := start.Add(time.Duration(i) * interval)
		if w := time.Until(t); w > 0 {
			time.Sleep(w)
		}
		due <- t
	}
	close(due)
	wg.Wait()
	slices.Sort(lat)
	q := func(p float64) time.Duration {
		if len(lat) == 0 {
			return 0
		}
		return lat[min(len(lat)-1, int(p*float64(len(lat))))].Round(time.Microsecond)
	}
	return q(0.50), q(0.90), q(0.99), q(0.999), n, nerr.Load()
}
