package kube

import (
	"bytes"
	"encoding/json"
	"time"
)

// ObjectMeta is an object's metadata: the fields the labeler reads, and every other field
// as it was read, so that an update sends back what this package does not model.
type ObjectMeta struct {
	Name            string
	Namespace       string
	ResourceVersion string
	Labels          map[string]string
	Annotations     map[string]string
	rest            map[string]json.RawMessage
}

// The JSON names of ObjectMeta's modelled fields.
const (
	fieldName            = "name"
	fieldNamespace       = "namespace"
	fieldResourceVersion = "resourceVersion"
	fieldLabels          = "labels"
	fieldAnnotations     = "annotations"
)

// UnmarshalJSON keeps the fields ObjectMeta does not model.
func (m *ObjectMeta) UnmarshalJSON(b []byte) error {
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(b, &fields); err != nil {
		return err
	}
	*m = ObjectMeta{}
	for key, dst := range map[string]any{fieldName: &m.Name, fieldNamespace: &m.Namespace,
		fieldResourceVersion: &m.ResourceVersion, fieldLabels: &m.Labels, fieldAnnotations: &m.Annotations} {
		if raw, ok := fields[key]; ok {
			if err := json.Unmarshal(raw, dst); err != nil {
				return err
			}
			delete(fields, key)
		}
	}
	if len(fields) > 0 {
		m.rest = fields
	}
	return nil
}

// MarshalJSON writes the modelled fields over the ones kept as read.
func (m ObjectMeta) MarshalJSON() ([]byte, error) {
	out := make(map[string]any, len(m.rest)+5)
	for k, v := range m.rest {
		out[k] = v
	}
	for key, v := range map[string]string{fieldName: m.Name, fieldNamespace: m.Namespace, fieldResourceVersion: m.ResourceVersion} {
		if v != "" {
			out[key] = v
		}
	}
	if m.Labels != nil {
		out[fieldLabels] = m.Labels
	}
	if m.Annotations != nil {
		out[fieldAnnotations] = m.Annotations
	}
	return json.Marshal(out)
}

// ListMeta is a list's metadata.
type ListMeta struct {
	ResourceVersion string `json:"resourceVersion,omitempty"`
}

// Pod is what the labeler reads of a pod.
type Pod struct {
	Metadata ObjectMeta `json:"metadata"`
	Spec     PodSpec    `json:"spec"`
	Status   PodStatus  `json:"status"`
}

// PodSpec is what the labeler reads of a pod's spec.
type PodSpec struct {
	ReadinessGates []PodReadinessGate `json:"readinessGates,omitempty"`
}

// PodReadinessGate is one of a pod's readiness gates.
type PodReadinessGate struct {
	ConditionType string `json:"conditionType"`
}

// PodStatus is what the labeler reads of a pod's status.
type PodStatus struct {
	PodIP string `json:"podIP,omitempty"`
}

// PodList is a list of pods.
type PodList struct {
	Metadata ListMeta `json:"metadata"`
	Items    []Pod    `json:"items"`
}

// Lease is a coordination.k8s.io/v1 Lease.
type Lease struct {
	APIVersion string     `json:"apiVersion"`
	Kind       string     `json:"kind"`
	Metadata   ObjectMeta `json:"metadata"`
	Spec       LeaseSpec  `json:"spec"`
}

// NewLease is a Lease named name with spec, to create.
func NewLease(name string, spec LeaseSpec) *Lease {
	return &Lease{APIVersion: "coordination.k8s.io/v1", Kind: "Lease", Metadata: ObjectMeta{Name: name}, Spec: spec}
}

// LeaseSpec is every field of coordination.k8s.io/v1 LeaseSpec.
type LeaseSpec struct {
	HolderIdentity       *string    `json:"holderIdentity,omitempty"`
	LeaseDurationSeconds *int32     `json:"leaseDurationSeconds,omitempty"`
	AcquireTime          *MicroTime `json:"acquireTime,omitempty"`
	RenewTime            *MicroTime `json:"renewTime,omitempty"`
	LeaseTransitions     *int32     `json:"leaseTransitions,omitempty"`
	Strategy             *string    `json:"strategy,omitempty"`
	PreferredHolder      *string    `json:"preferredHolder,omitempty"`
}

// MicroTime is a time with microseconds, as the API serializes Lease times (metav1.MicroTime).
type MicroTime struct{ time.Time }

// rfc3339Micro is metav1.MicroTime's format.
const rfc3339Micro = "2006-01-02T15:04:05.000000Z07:00"

// NewMicroTime is t as the API keeps it: in UTC, to the microsecond.
func NewMicroTime(t time.Time) *MicroTime {
	return &MicroTime{t.UTC().Truncate(time.Microsecond)}
}

// MarshalJSON writes the time in UTC with microseconds.
func (t MicroTime) MarshalJSON() ([]byte, error) {
	if t.IsZero() {
		return []byte("null"), nil
	}
	return json.Marshal(t.UTC().Format(rfc3339Micro))
}

// UnmarshalJSON reads RFC 3339 with any fraction, or null.
func (t *MicroTime) UnmarshalJSON(b []byte) error {
	if bytes.Equal(b, []byte("null")) {
		t.Time = time.Time{}
		return nil
	}
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return err
	}
	parsed, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return err
	}
	t.Time = parsed.Local()
	return nil
}

// EndpointSlice is what the labeler reads of a discovery.k8s.io/v1 EndpointSlice.
type EndpointSlice struct {
	Metadata    ObjectMeta `json:"metadata"`
	AddressType string     `json:"addressType"`
	Endpoints   []Endpoint `json:"endpoints"`
}

// Endpoint is one endpoint of an EndpointSlice.
type Endpoint struct {
	Addresses  []string           `json:"addresses"`
	Conditions EndpointConditions `json:"conditions"`
	TargetRef  *ObjectReference   `json:"targetRef,omitempty"`
}

// EndpointConditions are an endpoint's conditions.
type EndpointConditions struct {
	Ready *bool `json:"ready,omitempty"`
}

// ObjectReference names the object an endpoint stands for.
type ObjectReference struct {
	Kind string `json:"kind,omitempty"`
	Name string `json:"name,omitempty"`
}

// EndpointSliceList is a list of EndpointSlices.
type EndpointSliceList struct {
	Metadata ListMeta        `json:"metadata"`
	Items    []EndpointSlice `json:"items"`
}
