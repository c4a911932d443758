package webhook

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"strconv"
	"sync"
	"time"

	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/record"
	sigsjson "sigs.k8s.io/json"

	"github.com/habring/habring/internal/patch"
)

// MaxRequestBytes bounds an AdmissionReview body. An object is at most 1.5 MiB in etcd
// (its default --max-request-bytes); a review carries the object and, for updates, the old
// one, JSON-encoded with escaping. 7 MiB is the bound controller-runtime settled on for
// the same reasons; anything larger is not from a real API server.
const MaxRequestBytes = 7 << 20

var podResource = metav1.GroupVersionResource{Version: "v1", Resource: "pods"}

// Handler serves /mutate.
type Handler struct {
	Source patch.Source
	// Injector mutates pods with the webhook's options (required: patch.NewInjector).
	Injector *patch.Injector
	// Events records what an operator must act on as Events on the workload (none when
	// nil): NewEventRecorder.
	Events  record.EventRecorder
	Metrics *Metrics
	Log     *slog.Logger
	// Timeout bounds the work for one request (the owner GET on a cache miss); it must
	// stay below the webhook configuration's timeoutSeconds.
	Timeout time.Duration
}

// BadRequestError is a body /mutate cannot answer: HTTP 400, with Error() as the reply.
// It keeps its cause (a decoding error, a *http.MaxBytesError) for errors.Is and errors.As.
type BadRequestError struct {
	Msg   string // what the client is told
	Cause error  // nil when the body itself was the problem
}

func (e *BadRequestError) Error() string { return e.Msg }

// Unwrap returns the cause.
func (e *BadRequestError) Unwrap() error { return e.Cause }

func badRequest(cause error, format string, args ...any) error {
	return &BadRequestError{Msg: fmt.Sprintf(format, args...), Cause: cause}
}

func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	req, pod, meta, err := decodePodReview(w, r)
	if err != nil {
		h.observe(start, OutcomeErrored, "bad-request")
		h.Log.Debug("bad admission request", "remote", r.RemoteAddr, "err", err)
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	ctx := r.Context()
	if h.Timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, h.Timeout)
		defer cancel()
	}
	resp, outcome, reason := h.review(ctx, req, pod)
	resp.UID = req.UID
	out := admissionv1.AdmissionReview{TypeMeta: meta, Response: resp}
	buf := buffers.Get().(*bytes.Buffer)
	defer release(buf)
	if err := json.NewEncoder(buf).Encode(&out); err != nil {
		h.observe(start, OutcomeErrored, "encode")
		http.Error(w, "encode response: "+err.Error(), http.StatusInternalServerError)
		return
	}
	// With its length said, the response goes out whole: without it, net/http sends a body
	// over 2 KiB (every patch with the labeler) chunked, 6% fewer requests a second.
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(buf.Len()))
	_, _ = w.Write(buf.Bytes()) // a write error leaves nobody to tell
	h.observe(start, outcome, reason)
}

// buffers are the handler's scratch space: the response is encoded there.
var buffers = sync.Pool{New: func() any { return new(bytes.Buffer) }}

func release(b *bytes.Buffer) {
	if b.Cap() <= 1<<20 { // a large pod's is not kept for everyone
		b.Reset()
		buffers.Put(b)
	}
}

// podReview is an AdmissionReview whose object is decoded as a Pod in the same pass: the
// request is read once, not once as a review and again as a pod. (Its Object field hides
// AdmissionRequest's raw one.)
type podReview struct {
	metav1.TypeMeta `json:",inline"`
	Request         *struct {
		admissionv1.AdmissionRequest `json:",inline"`
		Object                       *corev1.Pod `json:"object,omitempty"`
	} `json:"request,omitempty"`
}

// decodePodReview is DecodeReview for /mutate: the same checks, and the object decoded as
// a Pod (nil when the request has none, or when it is not one: review then says why).
func decodePodReview(w http.ResponseWriter, r *http.Request) (*admissionv1.AdmissionRequest, *corev1.Pod, metav1.TypeMeta, error) {
	body, err := readReview(w, r)
	if err != nil {
		return nil, nil, metav1.TypeMeta{}, err
	}
	var pr podReview
	if err := unmarshal(body, &pr); err == nil && pr.Request != nil {
		if err := checkReview(pr.TypeMeta, &pr.Request.AdmissionRequest); err != nil {
			return nil, nil, metav1.TypeMeta{}, err
		}
		return &pr.Request.AdmissionRequest, pr.Request.Object, pr.TypeMeta, nil
	}
	// Not a review with a pod (another kind's object, or not a review at all): decode it
	// as a plain review, for the precise answer.
	review, err := decodeReview(body)
	if err != nil {
		return nil, nil, metav1.TypeMeta{}, err
	}
	return review.Request, nil, review.TypeMeta, nil
}

func (h *Handler) observe(start time.Time, outcome, reason string) {
	h.Metrics.Requests.WithLabelValues(outcome, reason).Inc()
	h.Metrics.Duration.WithLabelValues(outcome).Observe(time.Since(start).Seconds())
}

// DecodeReview reads and checks one AdmissionReview request as /mutate does: POST,
// application/json, at most MaxRequestBytes, admission.k8s.io/v1 with a request and a uid,
// keys matched case-sensitively. Every error is a *BadRequestError.
func DecodeReview(w http.ResponseWriter, r *http.Request) (*admissionv1.AdmissionReview, error) {
	body, err := readReview(w, r)
	if err != nil {
		return nil, err
	}
	return decodeReview(body)
}

func readReview(w http.ResponseWriter, r *http.Request) ([]byte, error) {
	if r.Method != http.MethodPost {
		return nil, badRequest(nil, "method %s not allowed; the API server POSTs AdmissionReviews", r.Method)
	}
	ct, _, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if err != nil || ct != "application/json" {
		return nil, badRequest(nil, "content type %q not supported; want application/json", r.Header.Get("Content-Type"))
	}
	body, err := readAll(http.MaxBytesReader(w, r.Body, MaxRequestBytes), r.ContentLength)
	var tooBig *http.MaxBytesError
	switch {
	case errors.As(err, &tooBig):
		return nil, badRequest(err, "body larger than %d bytes", MaxRequestBytes)
	case err != nil:
		return nil, badRequest(err, "read body: %v", err)
	case len(body) == 0:
		return nil, badRequest(nil, "empty body; want an AdmissionReview")
	}
	return body, nil
}

// readAll is io.ReadAll with the buffer sized from Content-Length (at most
// MaxRequestBytes) when the client sent one: no growing and copying on the way.
func readAll(r io.Reader, size int64) ([]byte, error) {
	if size <= 0 || size > MaxRequestBytes {
		return io.ReadAll(r)
	}
	var b bytes.Buffer
	b.Grow(int(size) + bytes.MinRead) // ReadFrom wants MinRead free to read to EOF without growing
	_, err := b.ReadFrom(r)
	return b.Bytes(), err
}

func decodeReview(body []byte) (*admissionv1.AdmissionReview, error) {
	var review admissionv1.AdmissionReview
	if err := unmarshal(body, &review); err != nil {
		return nil, badRequest(err, "body is not an AdmissionReview: %v", err)
	}
	if err := checkReview(review.TypeMeta, review.Request); err != nil {
		return nil, err
	}
	return &review, nil
}

// checkReview: admission.k8s.io/v1, with a request that has a uid.
func checkReview(tm metav1.TypeMeta, req *admissionv1.AdmissionRequest) error {
	if tm.APIVersion != admissionv1.SchemeGroupVersion.String() || tm.Kind != "AdmissionReview" {
		return badRequest(nil, "got apiVersion %q kind %q; want admission.k8s.io/v1 AdmissionReview (set admissionReviewVersions: [v1])", tm.APIVersion, tm.Kind)
	}
	if req == nil {
		return badRequest(nil, "AdmissionReview has no request")
	}
	if req.UID == "" {
		return badRequest(nil, "AdmissionReview request has no uid")
	}
	return nil
}

// review decides one request. Dry-run requests take exactly the same path, but record no
// Event, the one thing the webhook writes (sideEffects: NoneOnDryRun).
func (h *Handler) review(ctx context.Context, req *admissionv1.AdmissionRequest, pod *corev1.Pod) (resp *admissionv1.AdmissionResponse, outcome, reason string) {
	if req.Resource != podResource || req.SubResource != "" {
		msg := fmt.Sprintf("habring mutates pods only, but was sent %s; fix the webhook configuration's rules", resourceName(req.Resource, req.SubResource))
		h.log(ctx, slog.LevelWarn, "request for a resource habring does not handle", req, nil, "resource", req.Resource.String(), "subResource", req.SubResource)
		return deny(http.StatusBadRequest, metav1.StatusReasonBadRequest, msg), OutcomeDenied, "wrong-resource"
	}
	if req.Operation != admissionv1.Create {
		return &admissionv1.AdmissionResponse{Allowed: true}, OutcomeSkipped, "not-create"
	}
	if pod == nil {
		// The one-pass decode found no Pod: say why from the raw object.
		pod = &corev1.Pod{}
		err := errors.New("the request has no object")
		if len(req.Object.Raw) > 0 {
			err = unmarshal(req.Object.Raw, pod)
		}
		if err != nil {
			return deny(http.StatusBadRequest, metav1.StatusReasonBadRequest, "request object is not a Pod: "+err.Error()), OutcomeErrored, "bad-object"
		}
	}
	d, err := h.Injector.Admit(ctx, pod, req.Namespace, h.Source)
	var ae *patch.AnnotationError
	switch {
	case errors.As(err, &ae):
		h.log(ctx, slog.LevelInfo, "denied: invalid annotation", req, &d, "annotation", ae.Key, "err", err)
		h.event(req, &d, corev1.EventTypeWarning, EventDenied, "denied pod %s: %v", podName(req, pod), err)
		return deny(http.StatusBadRequest, metav1.StatusReasonInvalid, err.Error()), OutcomeDenied, "invalid-annotation"
	case errors.Is(err, patch.ErrNoContainers):
		h.log(ctx, slog.LevelInfo, "denied: no containers", req, &d, "err", err)
		return deny(http.StatusBadRequest, metav1.StatusReasonInvalid, err.Error()), OutcomeDenied, "no-containers"
	case errors.Is(err, patch.ErrNoBootstrap):
		h.log(ctx, slog.LevelInfo, "denied: no peers", req, &d, "err", err)
		h.event(req, &d, corev1.EventTypeWarning, EventDenied, "denied pod %s until its ring is up: %v", podName(req, pod), err)
		return deny(http.StatusForbidden, metav1.StatusReasonForbidden, err.Error()), OutcomeDenied, "no-peers"
	case errors.Is(err, patch.ErrOwnerNotFound):
		h.log(ctx, slog.LevelInfo, "denied: owner not found", req, &d, "err", err)
		return deny(http.StatusNotFound, metav1.StatusReasonNotFound, err.Error()), OutcomeDenied, "owner-not-found"
	case err != nil:
		// Not the user's fault (the API server did not answer a cache miss in time, say):
		// fail the request so the controller retries, rather than admit a pod without peers.
		h.log(ctx, slog.LevelError, "admission failed", req, &d, "err", err)
		return deny(http.StatusInternalServerError, metav1.StatusReasonInternalError, "habring could not decide: "+err.Error()), OutcomeErrored, "internal"
	case d.Skip != "":
		h.log(ctx, slog.LevelDebug, "skipped", req, &d, "reason", d.Skip)
		return &admissionv1.AdmissionResponse{Allowed: true}, OutcomeSkipped, d.Skip
	}
	h.log(ctx, slog.LevelDebug, "injected", req, &d, "peers", d.Result.Plan.Peers, "reason", d.Result.Plan.Reason)
	if d.Result.Plan.Bootstrap {
		h.event(req, &d, corev1.EventTypeNormal, EventBootstrap, "admitted pod %s with no peers: it starts ring %q alone (%s)",
			podName(req, pod), d.Spec.Ring, d.Result.Plan.Reason)
	}
	pt := admissionv1.PatchTypeJSONPatch
	return &admissionv1.AdmissionResponse{Allowed: true, Patch: d.Result.Patch, PatchType: &pt}, OutcomeInjected, ""
}

// resourceName reads as kubectl names a resource: "pods", "apps/v1 deployments",
// "pods/status".
func resourceName(r metav1.GroupVersionResource, sub string) string {
	name := r.Resource
	if sub != "" {
		name += "/" + sub
	}
	gv := r.Version
	if r.Group != "" {
		gv = r.Group + "/" + r.Version
	}
	return gv + " " + name
}

// log writes one line with the request's identity (uid, namespace, name, ring, owner).
// The attributes are built only when the level is enabled: admission is a hot path and
// most of its lines are at debug level.
func (h *Handler) log(ctx context.Context, level slog.Level, msg string, req *admissionv1.AdmissionRequest, d *patch.Decision, args ...any) {
	if !h.Log.Enabled(ctx, level) {
		return
	}
	attrs := []any{"uid", req.UID, "namespace", req.Namespace, "name", req.Name}
	if d != nil {
		attrs = append(attrs, "ring", d.Spec.Ring, "owner", d.Owner.Kind+"/"+d.Owner.Name)
	}
	h.Log.Log(ctx, level, msg, append(attrs, args...)...)
}

// unmarshal decodes JSON the way the API server does: keys match case-sensitively.
// encoding/json would read "metAdata" as metadata, and a patch computed from that view
// would name paths ("/metadata/...") that the raw object does not have.
func unmarshal(data []byte, v any) error {
	return sigsjson.UnmarshalCaseSensitivePreserveInts(data, v)
}

func deny(code int32, reason metav1.StatusReason, msg string) *admissionv1.AdmissionResponse {
	return &admissionv1.AdmissionResponse{Result: &metav1.Status{Status: metav1.StatusFailure, Code: code, Reason: reason, Message: msg}}
}
