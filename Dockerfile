# One image for `habring webhook` and `habring labeler` (the sidecar runs the webhook's
# own image: deploy/ copies the image reference into --labeler-image).
#   make image                       (docker build, or any OCI builder reading this file)
FROM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
# .dockerignore keeps tests, examples and build output out of the context.
COPY . .
# Static, no cgo: runs on distroless/static with no libc.
RUN CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o /out/habring ./cmd/habring

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/habring /habring
# 65532:65532, as deploy/ and the labeler's securityContext expect.
USER 65532:65532
ENTRYPOINT ["/habring"]
