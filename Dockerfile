# The same image `make image` writes without a container engine (tools/image): static
# habring and habring-labeler on an empty base, user 65532, the OCI labels. With an engine:
#   make docker-image   (docker build --build-arg VERSION=... --build-arg REVISION=...)
FROM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
# .dockerignore keeps tests, examples and build output out of the context.
COPY . .
# Static, no cgo: runs on an empty base with no libc; the flags are tools/image's.
RUN CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -buildid=" -o /out/habring ./cmd/habring && \
    CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -buildid=" -o /out/habring-labeler ./cmd/habring-labeler

FROM scratch
ARG VERSION=dev
ARG REVISION=unknown
LABEL org.opencontainers.image.source="https://github.com/habring/habring" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.title="habring"
COPY --from=build /out/habring /out/habring-labeler /
# 65532:65532, as deploy/, the chart and the labeler's securityContext expect.
USER 65532:65532
ENTRYPOINT ["/habring"]
