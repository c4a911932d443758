package webhook_test

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/habring/habring/internal/webhook"
	"github.com/habring/habring/test/echo"
)

// BenchmarkEcho is the floor BenchmarkAdmission is read against: decode and allow,
// nothing else, on the same bodies.
func BenchmarkEcho(b *testing.B) {
	bodies := webhook.BenchBodies(b)
	for _, name := range []string{"typical-statefulset-pod", "large-pod"} {
		body := bodies[name]
		b.Run(name, func(b *testing.B) {
			b.SetBytes(int64(len(body)))
			b.ReportAllocs()
			for b.Loop() {
				r := httptest.NewRequest(http.MethodPost, "/mutate", bytes.NewReader(body))
				r.Header.Set("Content-Type", "application/json")
				w := httptest.NewRecorder()
				echo.Handler(w, r)
				if w.Code != http.StatusOK {
					b.Fatalf("status %d: %s", w.Code, w.Body)
				}
			}
		})
	}
}
