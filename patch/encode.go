package patch

import (
	"bytes"
	"encoding/json"

	"gomodules.xyz/jsonpatch/v2"
	corev1 "k8s.io/api/core/v1"

	"github.com/habring/habring/contract"
)

// WritePatch appends the result's JSON patch to b, the bytes json.Marshal(r.Patch) gives
// (the golden tests compare them), in one pass: the library's Operation.MarshalJSON encodes
// each operation on its own, and encoding/json then compacts every result again. What
// Mutate adds to every pod of a ring alike, most of the patch's bytes, is written as it was
// encoded once: the labeler container (built) and its volumes (sharedJSON). On an error, b
// holds part of the patch.
func (r *Result) WritePatch(b *bytes.Buffer) error {
	return writeOps(b, r.Patch, r)
}

// writeOps writes ops as a JSON array; with r, the values Mutate shares come from their
// JSON encoded once.
func writeOps(b *bytes.Buffer, ops []jsonpatch.Operation, r *Result) error {
	b.WriteByte('[')
	for i, op := range ops {
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
			if err := r.value(b, op.Value); err != nil {
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

// value writes v, an operation's value. Containers and volumes appear whole only when Diff
// adds them (appended to a list, or a list the pod had none of), and what Mutate appends
// is the labeler container and its shared volumes.
func (r *Result) value(b *bytes.Buffer, v any) error {
	if r == nil {
		return appendJSON(b, v)
	}
	switch v := v.(type) {
	case *corev1.Container:
		return r.container(b, v)
	case *corev1.Volume:
		return volume(b, v)
	case *[]corev1.Container:
		return list(b, *v, func(c *corev1.Container) error { return r.container(b, c) })
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

func (r *Result) container(b *bytes.Buffer, c *corev1.Container) error {
	if r.labeler != nil && r.labeler.json != nil && c.Name == contract.LabelerContainerName {
		b.Write(r.labeler.json)
		return nil
	}
	return appendJSON(b, c)
}

func volume(b *bytes.Buffer, v *corev1.Volume) error {
	if j := sharedJSON(v); j != nil {
		b.Write(j)
		return nil
	}
	return appendJSON(b, v)
}
