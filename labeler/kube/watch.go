package kube

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
)

// Watch event types.
const (
	Added    = "ADDED"
	Modified = "MODIFIED"
	Deleted  = "DELETED"
	Bookmark = "BOOKMARK"
	Error    = "ERROR"
)

// Event is one watch event. For Bookmark only Object's resourceVersion is set; for Error,
// Err holds the server's Status (410 Gone: the resourceVersion is too old, list again).
type Event[T any] struct {
	Type   string
	Object T
	Err    *StatusError
}

// Watch is a stream of watch events.
type Watch[T any] interface {
	// Next blocks for the next event; io.EOF when the server ended the watch.
	Next() (Event[T], error)
	// Stop ends the watch.
	Stop()
}

type stream[T any] struct {
	body   io.ReadCloser
	dec    *json.Decoder
	cancel context.CancelFunc
}

func (s *stream[T]) Next() (Event[T], error) {
	var raw struct {
		Type   string          `json:"type"`
		Object json.RawMessage `json:"object"`
	}
	if err := s.dec.Decode(&raw); err != nil {
		return Event[T]{}, err
	}
	ev := Event[T]{Type: raw.Type}
	switch raw.Type {
	case Error:
		st := &status{}
		if err := json.Unmarshal(raw.Object, st); err != nil {
			return Event[T]{}, fmt.Errorf("watch: decode an error event: %w", err)
		}
		ev.Err = &StatusError{Code: st.Code, Reason: st.Reason, Message: st.Message}
	case Added, Modified, Deleted, Bookmark:
		if err := json.Unmarshal(raw.Object, &ev.Object); err != nil {
			return Event[T]{}, fmt.Errorf("watch: decode a %s event: %w", raw.Type, err)
		}
	default:
		return Event[T]{}, fmt.Errorf("watch: unknown event type %q", raw.Type)
	}
	return ev, nil
}

func (s *stream[T]) Stop() {
	s.cancel()
	_ = s.body.Close()
}
