// Package webhook is habring's admission server: it decodes AdmissionReview requests,
// asks package patch what to do with the pod, and answers with a JSON patch or a denial.
// It owns the HTTP surface (/mutate, /healthz, /readyz, /metrics), the metrics, the
// Events on workloads and the server's life cycle; the informer caches that answer
// patch.Source are package ring's.
//
// It must not decide anything about peers or pod contents itself: that is package patch.
package webhook
