package kube

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"
	"time"
)

// Patch types the API server accepts.
const (
	MergePatch          = "application/merge-patch+json"
	StrategicMergePatch = "application/strategic-merge-patch+json"
)

// requestTimeout bounds every request but a watch (client-go sets none; a labeler must
// not hang on an API server that stopped answering).
const requestTimeout = 30 * time.Second

// maxBody bounds what is read of one response: a labeler's lists are its ring's few
// EndpointSlices and pods.
const maxBody = 16 << 20

// tokenRefresh is how often a token file is read again, as client-go does.
const tokenRefresh = time.Minute

// Client makes the labeler's requests in one namespace.
type Client struct {
	cfg       *Config
	namespace string
	http      *http.Client
	// FieldManager names the client's writes in managedFields.
	FieldManager string

	mu        sync.Mutex
	token     string
	tokenRead time.Time
}

// New is a Client for namespace. Requests share one connection (HTTP/2 when the server
// offers it, as client-go's).
func New(cfg *Config, namespace, fieldManager string) (*Client, error) {
	if cfg.Host == "" {
		return nil, errors.New("no API server host")
	}
	transport := &http.Transport{
		Proxy:               http.ProxyFromEnvironment, // as client-go
		TLSClientConfig:     cfg.TLS,
		ForceAttemptHTTP2:   true,
		TLSHandshakeTimeout: 10 * time.Second,
		IdleConnTimeout:     90 * time.Second,
		MaxIdleConnsPerHost: 4,
	}
	return &Client{cfg: cfg, namespace: namespace, FieldManager: fieldManager, http: &http.Client{Transport: transport}}, nil
}

// bearer is the token to send: the static one, or the token file's, read again once a
// minute; a file that cannot be read keeps the last good token.
func (c *Client) bearer() (string, error) {
	if c.cfg.TokenFile == "" {
		return c.cfg.Token, nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.token != "" && time.Since(c.tokenRead) < tokenRefresh {
		return c.token, nil
	}
	b, err := os.ReadFile(c.cfg.TokenFile)
	if t := strings.TrimSpace(string(b)); err == nil && t != "" {
		c.token, c.tokenRead = t, time.Now()
	} else if c.token == "" {
		if err == nil {
			err = errors.New("it is empty")
		}
		return "", fmt.Errorf("token file %s: %w", c.cfg.TokenFile, err)
	}
	return c.token, nil
}

// request is one API call.
type request struct {
	method      string
	path        string // from the API root, e.g. /api/v1/namespaces/ns/pods/name
	query       url.Values
	contentType string
	body        []byte
}

// path builds /<root>/namespaces/<ns>/<resource>[/<name>[/<subresource>]].
func (c *Client) path(root, resource string, parts ...string) string {
	p := root + "/namespaces/" + url.PathEscape(c.namespace) + "/" + resource
	for _, s := range parts {
		if s != "" {
			p += "/" + url.PathEscape(s)
		}
	}
	return p
}

const (
	coreV1         = "/api/v1"
	coordinationV1 = "/apis/coordination.k8s.io/v1"
	discoveryV1    = "/apis/discovery.k8s.io/v1"
)

// send makes the request and returns the response when it succeeded (2xx); any other
// status is a *StatusError.
func (c *Client) send(ctx context.Context, r request) (*http.Response, error) {
	u := c.cfg.Host + r.path
	if len(r.query) > 0 {
		u += "?" + r.query.Encode()
	}
	var body io.Reader
	if r.body != nil {
		body = bytes.NewReader(r.body)
	}
	req, err := http.NewRequestWithContext(ctx, r.method, u, body)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", "application/json")
	if r.contentType != "" {
		req.Header.Set("Content-Type", r.contentType)
	}
	if c.cfg.UserAgent != "" {
		req.Header.Set("User-Agent", c.cfg.UserAgent)
	}
	token, err := c.bearer()
	if err != nil {
		return nil, err
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode/100 != 2 {
		defer func() { _ = resp.Body.Close() }()
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		return nil, statusError(r.method, r.path, resp.StatusCode, b)
	}
	return resp, nil
}

// do makes a request that is not a watch, bounded by requestTimeout, and decodes the
// answer into out (when not nil).
func (c *Client) do(ctx context.Context, r request, out any) error {
	ctx, cancel := context.WithTimeout(ctx, requestTimeout)
	defer cancel()
	resp, err := c.send(ctx, r)
	if err != nil {
		return err
	}
	defer func() { _ = resp.Body.Close() }()
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxBody+1))
	if err != nil {
		return fmt.Errorf("%s %s: read the answer: %w", r.method, r.path, err)
	}
	if len(b) > maxBody {
		return fmt.Errorf("%s %s: the answer is over %d bytes", r.method, r.path, maxBody)
	}
	if out == nil {
		return nil
	}
	if err := json.Unmarshal(b, out); err != nil {
		return fmt.Errorf("%s %s: decode the answer: %w", r.method, r.path, err)
	}
	return nil
}

func (c *Client) writeQuery() url.Values {
	q := url.Values{}
	if c.FieldManager != "" {
		q.Set("fieldManager", c.FieldManager)
	}
	return q
}

// GetPod reads the pod name.
func (c *Client) GetPod(ctx context.Context, name string) (*Pod, error) {
	p := &Pod{}
	return p, c.do(ctx, request{method: http.MethodGet, path: c.path(coreV1, "pods", name)}, p)
}

// PatchPod patches the pod, or its subresource ("status") when one is named, with a
// patch of patchType (MergePatch, StrategicMergePatch).
func (c *Client) PatchPod(ctx context.Context, name, patchType string, body []byte, subresource ...string) error {
	return c.do(ctx, request{method: http.MethodPatch, path: c.path(coreV1, "pods", append([]string{name}, subresource...)...),
		query: c.writeQuery(), contentType: patchType, body: body}, nil)
}

// ListPods lists the pods matching labelSelector.
func (c *Client) ListPods(ctx context.Context, labelSelector string) ([]Pod, error) {
	list := &PodList{}
	err := c.do(ctx, request{method: http.MethodGet, path: c.path(coreV1, "pods"), query: url.Values{"labelSelector": {labelSelector}}}, list)
	return list.Items, err
}

// GetLease reads the Lease name.
func (c *Client) GetLease(ctx context.Context, name string) (*Lease, error) {
	l := &Lease{}
	return l, c.do(ctx, request{method: http.MethodGet, path: c.path(coordinationV1, "leases", name)}, l)
}

// CreateLease creates lease.
func (c *Client) CreateLease(ctx context.Context, lease *Lease) (*Lease, error) {
	return c.writeLease(ctx, http.MethodPost, c.path(coordinationV1, "leases"), lease)
}

// UpdateLease replaces lease; its resourceVersion is the precondition (409 Conflict when
// the Lease changed since it was read).
func (c *Client) UpdateLease(ctx context.Context, lease *Lease) (*Lease, error) {
	return c.writeLease(ctx, http.MethodPut, c.path(coordinationV1, "leases", lease.Metadata.Name), lease)
}

func (c *Client) writeLease(ctx context.Context, method, path string, lease *Lease) (*Lease, error) {
	if lease.APIVersion == "" {
		lease.APIVersion, lease.Kind = "coordination.k8s.io/v1", "Lease"
	}
	body, err := json.Marshal(lease)
	if err != nil {
		return nil, err
	}
	out := &Lease{}
	return out, c.do(ctx, request{method: method, path: path, query: c.writeQuery(), contentType: "application/json", body: body}, out)
}

// ListEndpointSlices lists the EndpointSlices matching labelSelector.
func (c *Client) ListEndpointSlices(ctx context.Context, labelSelector string) (*EndpointSliceList, error) {
	list := &EndpointSliceList{}
	return list, c.do(ctx, request{method: http.MethodGet, path: c.path(discoveryV1, "endpointslices"), query: url.Values{"labelSelector": {labelSelector}}}, list)
}

// WatchEndpointSlices watches the EndpointSlices matching labelSelector from
// resourceVersion, with bookmarks; the server ends it after timeout.
func (c *Client) WatchEndpointSlices(ctx context.Context, labelSelector, resourceVersion string, timeout time.Duration) (Watch[EndpointSlice], error) {
	q := url.Values{"labelSelector": {labelSelector}, "watch": {"true"}, "allowWatchBookmarks": {"true"},
		"resourceVersion": {resourceVersion}, "timeoutSeconds": {fmt.Sprint(int(timeout / time.Second))}}
	r := request{method: http.MethodGet, path: c.path(discoveryV1, "endpointslices"), query: q}
	// The server closes the watch after timeoutSeconds; this bound is for one that does not.
	ctx, cancel := context.WithTimeout(ctx, timeout+requestTimeout)
	resp, err := c.send(ctx, r) //nolint:bodyclose // the stream owns the body: Stop closes it
	if err != nil {
		cancel()
		return nil, err
	}
	return &stream[EndpointSlice]{body: resp.Body, dec: json.NewDecoder(resp.Body), cancel: cancel}, nil
}
