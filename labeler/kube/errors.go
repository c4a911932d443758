package kube

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
)

// StatusError is an API request that failed with an HTTP status: Code, and the Status
// object's reason and message when the server sent one.
type StatusError struct {
	Code    int
	Reason  string
	Message string
}

func (e *StatusError) Error() string {
	if e.Message != "" {
		return e.Message
	}
	return fmt.Sprintf("the server answered %d %s", e.Code, http.StatusText(e.Code))
}

// status is metav1.Status, as far as errors need it.
type status struct {
	Code    int    `json:"code"`
	Reason  string `json:"reason"`
	Message string `json:"message"`
}

func statusError(method, path string, code int, body []byte) *StatusError {
	var st status
	if json.Unmarshal(body, &st) == nil && (st.Message != "" || st.Reason != "") {
		return &StatusError{Code: code, Reason: st.Reason, Message: st.Message}
	}
	msg := strings.TrimSpace(string(body))
	if len(msg) > 256 {
		msg = msg[:256] + "..."
	}
	if msg == "" {
		msg = http.StatusText(code)
	}
	return &StatusError{Code: code, Message: fmt.Sprintf("%s %s: %d %s", method, path, code, msg)}
}

func hasCode(err error, code int) bool {
	var s *StatusError
	return errors.As(err, &s) && s.Code == code
}

// IsNotFound reports a 404.
func IsNotFound(err error) bool { return hasCode(err, http.StatusNotFound) }

// IsConflict reports a 409 (a write whose resourceVersion is stale, or a name taken).
func IsConflict(err error) bool { return hasCode(err, http.StatusConflict) }

// IsForbidden reports a 403.
func IsForbidden(err error) bool { return hasCode(err, http.StatusForbidden) }

// IsGone reports a 410: a watch's or list's resourceVersion is too old.
func IsGone(err error) bool { return hasCode(err, http.StatusGone) }
