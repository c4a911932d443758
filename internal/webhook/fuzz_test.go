package webhook

import (
	"bytes"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"testing"

	jsonpatch5 "github.com/evanphx/json-patch/v5"
	admissionv1 "k8s.io/api/admission/v1"
	"k8s.io/apimachinery/pkg/runtime"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"

	"github.com/habring/habring/contract"
)

// FuzzMutate throws arbitrary bodies at /mutate. Whatever arrives, the server must not
// panic, must answer 200 with a review for the same uid or 400, and any patch it returns
// must apply to the object it was sent.
//
//	go test ./webhook -run '^$' -fuzz FuzzMutate -fuzztime 5m
func FuzzMutate(f *testing.F) {
	inputs, _ := filepath.Glob("../patch/testdata/*.yaml")
	for _, in := range inputs {
		data, err := os.ReadFile(in)
		if err != nil {
			f.Fatal(err)
		}
		// The first document of each golden input is the pod.
		doc, _, _ := bytes.Cut(data, []byte("\n---"))
		raw, err := utilyaml.ToJSON(doc)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(reviewBody(f, admissionv1.Create, json.RawMessage(raw), nil))
	}
	f.Add([]byte(`{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"u","resource":{"version":"v1","resource":"pods"},"operation":"CREATE","object":null}}`))
	f.Add([]byte(`{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"u","resource":{"version":"v1","resource":"pods"},"operation":"CREATE","object":{"metadata":{"ownerReferences":[{"apiVersion":"apps/v1","kind":"ReplicaSet","name":"-","controller":true}],"labels":{"pod-template-hash":""}}}}}`))
	f.Add([]byte(`[]`))
	f.Add([]byte{})

	fx := newFixture(f, []runtime.Object{ringSTS("redis", 3), readySlice("redis-x", map[string]string{"redis-0": "10.0.0.10"})},
		deploymentMeta("web", map[string]string{contract.AnnotationRing: "main"}))
	f.Fuzz(func(t *testing.T, body []byte) {
		w := post(t, fx.router, body)
		switch w.Code {
		case http.StatusBadRequest:
			return
		case http.StatusOK:
		default:
			t.Fatalf("status %d: %s", w.Code, w.Body.String())
		}
		var in, out admissionv1.AdmissionReview
		if err := json.Unmarshal(body, &in); err != nil {
			t.Fatalf("200 for a body that is not a review: %v", err)
		}
		if err := json.Unmarshal(w.Body.Bytes(), &out); err != nil || out.Response == nil {
			t.Fatalf("200 with a body that is not a review: %v %s", err, w.Body.String())
		}
		if out.Response.UID != in.Request.UID {
			t.Fatalf("uid %q answered as %q", in.Request.UID, out.Response.UID)
		}
		if out.Response.Allowed && out.Response.Patch != nil {
			p, err := jsonpatch5.DecodePatch(out.Response.Patch)
			if err != nil {
				t.Fatalf("undecodable patch: %v", err)
			}
			if _, err := p.Apply(in.Request.Object.Raw); err != nil {
				t.Fatalf("patch does not apply to the object: %v\n%s", err, out.Response.Patch)
			}
		}
		if !out.Response.Allowed && (out.Response.Result == nil || out.Response.Result.Message == "") {
			t.Fatalf("denial without a message")
		}
	})
}
