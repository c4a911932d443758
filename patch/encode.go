package patch

import (
	"bytes"
	"encoding/json"
	"sync"

	"gomodules.xyz/jsonpatch/v2"
	corev1 "k8s.io/api/core/v1"

	"github.com/habring/habring/contract"
)

// EncodePatch encodes ops as the JSON patch of an admission response: the bytes
// json.Marshal(ops) gives, in one pass (the library's Operation.MarshalJSON encodes each
// operation on its own, and encoding/json then compacts every result again).
func EncodePatch(ops []jsonpatch.Operation) ([]byte, error) {
	return (*Encoder)(nil).Encode(&Result{Patch: ops})
}

// Encoder encodes a Result's patch as EncodePatch does, with a memory for what the webhook
// adds to every pod of a ring alike, which was most of the patch's encoding: the labeler
// container, kept by the few values it is built from (sidecar), and its volumes, which are
// always the same. The bytes are the same as without it (the golden tests compare them).
// A nil *Encoder keeps nothing. It is safe for concurrent use.
type Encoder struct {
	mu   sync.RWMutex
	memo map[sidecar][]byte
}

// memoSize bounds the memory: a value per ring spec and webhook options in use.
const memoSize = 1024

// The volumes Mutate appends, encoded once.
var (
	tokenVolumeJSON = sync.OnceValues(func() ([]byte, error) { v := labelerTokenVolume(); return json.Marshal(&v) })
	peersVolumeJSON = sync.OnceValues(func() ([]byte, error) { v := peersVolume(); return json.Marshal(&v) })
)

// buffers are Encode's scratch space: the patch is written there, then copied out at its size.
var buffers = sync.Pool{New: func() any { return new(bytes.Buffer) }}

// Encode encodes r.Patch.
func (e *Encoder) Encode(r *Result) ([]byte, error) {
	b := buffers.Get().(*bytes.Buffer)
	defer func() {
		if b.Cap() <= 1<<20 { // a large pod's patch is not kept for everyone
			b.Reset()
			buffers.Put(b)
		}
	}()
	if err := e.EncodeTo(b, r); err != nil {
		return nil, err
	}
	return bytes.Clone(b.Bytes()), nil
}

// EncodeTo appends r.Patch, encoded, to b; on an error, b holds part of it.
func (e *Encoder) EncodeTo(b *bytes.Buffer, r *Result) error {
	b.WriteByte('[')
	for i, op := range r.Patch {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(`{"op":`)
		if err := appendString(b, op.Operation); err != nil {
			return err
		}
		b.WriteString(`,"path":`)
		if err := appendString(b, op.Path); err != nil {
			return err
		}
		switch {
		case op.Value != nil:
			b.WriteString(`,"value":`)
			if err := e.value(b, r, op.Value); err != nil {
				return err
			}
		case op.Operation == "add" || op.Operation == "replace":
			b.WriteString(`,"value":null`) // they always carry a value
		}
		b.WriteByte('}')
	}
	b.WriteByte(']')
	return nil
}

// appendString writes s as a JSON string: as it is between quotes when encoding/json
// would write it so (printable ASCII that needs no escape), else as encoding/json writes it.
func appendString(b *bytes.Buffer, s string) error {
	for i := range len(s) {
		if c := s[i]; c < 0x20 || c >= 0x7f || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
			return appendJSON(b, s)
		}
	}
	b.WriteByte('"')
	b.WriteString(s)
	b.WriteByte('"')
	return nil
}

// appendJSON writes v as json.Marshal encodes it, straight into b.
func appendJSON(b *bytes.Buffer, v any) error {
	if err := json.NewEncoder(b).Encode(v); err != nil {
		return err
	}
	b.Truncate(b.Len() - 1) // Encode ends the value with a newline
	return nil
}

// value writes v, an operation's value: what Mutate appended from the memory, the rest
// encoded now. Appended elements are the tail of a list (Diff), and Mutate appends only
// the labeler container and its volumes, so a name tells which.
func (e *Encoder) value(b *bytes.Buffer, r *Result, v any) error {
	if e == nil {
		return appendJSON(b, v)
	}
	switch v := v.(type) {
	case *corev1.Container:
		return e.container(b, r, v)
	case *corev1.Volume:
		return volume(b, v)
	case *[]corev1.Container:
		return list(b, *v, func(c *corev1.Container) error { return e.container(b, r, c) })
	case *[]corev1.Volume:
		return list(b, *v, func(v *corev1.Volume) error { return volume(b, v) })
	}
	return appendJSON(b, v)
}

func list[T any](b *bytes.Buffer, l []T, write func(*T) error) error {
	if l == nil {
		b.WriteString("null")
		return nil
	}
	b.WriteByte('[')
	for i := range l {
		if i > 0 {
			b.WriteByte(',')
		}
		if err := write(&l[i]); err != nil {
			return err
		}
	}
	b.WriteByte(']')
	return nil
}

func (e *Encoder) container(b *bytes.Buffer, r *Result, c *corev1.Container) error {
	if r.sidecar == nil || c.Name != contract.LabelerContainerName {
		return appendJSON(b, c)
	}
	e.mu.RLock()
	j, ok := e.memo[*r.sidecar]
	e.mu.RUnlock()
	if !ok {
		var err error
		if j, err = json.Marshal(c); err != nil {
			return err
		}
		j = j[:len(j):len(j)]
		e.mu.Lock()
		if len(e.memo) >= memoSize || e.memo == nil {
			e.memo = make(map[sidecar][]byte) // forget all: rings in use fill it again
		}
		e.memo[*r.sidecar] = j
		e.mu.Unlock()
	}
	b.Write(j)
	return nil
}

func volume(b *bytes.Buffer, v *corev1.Volume) error {
	var j []byte
	var err error
	switch v.Name {
	case contract.LabelerTokenVolume:
		j, err = tokenVolumeJSON()
	case contract.PeersVolume:
		j, err = peersVolumeJSON()
	default:
		j, err = json.Marshal(v)
	}
	b.Write(j)
	return err
}
