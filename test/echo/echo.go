// Package echo is the floor habring's admission path is measured against: a handler that
// decodes an AdmissionReview exactly as habring's webhook does and allows it unchanged.
// The webhook's benchmarks and test/load serve it beside habring; the product never
// imports it.
package echo

import (
	"encoding/json"
	"net/http"

	admissionv1 "k8s.io/api/admission/v1"

	"github.com/habring/habring/internal/webhook"
)

// Handler decodes the review (webhook.DecodeReview: the same checks and decoder as
// /mutate) and answers "allowed" with no patch.
func Handler(w http.ResponseWriter, r *http.Request) {
	review, err := webhook.DecodeReview(w, r)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	out := admissionv1.AdmissionReview{TypeMeta: review.TypeMeta,
		Response: &admissionv1.AdmissionResponse{UID: review.Request.UID, Allowed: true}}
	body, err := json.Marshal(&out)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(body)
}
