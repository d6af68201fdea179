// Validation of the requests a client sends (BindIdmapped, MountImage, RemoveImage),
// loading only their validators: the client's start does not pay for the
// manifest and policy schemas it does not check.
import type { ValidateFunction } from 'ajv';
import { validate as bindRequest } from './validate-bind-request.generated.js';
import { validate as mountRequest } from './validate-mount-request.generated.js';
import { validate as removeRequest } from './validate-remove-request.generated.js';
import { runValidator, type ValidationResult } from './issues.js';
import type { BindRequest, MountRequest, RemoveRequest } from './types.generated.js';

export interface RequestTypes {
  'bind-request': BindRequest;
  'mount-request': MountRequest;
  'remove-request': RemoveRequest;
}

const validators: Record<keyof RequestTypes, ValidateFunction> = {
  'bind-request': bindRequest as ValidateFunction,
  'mount-request': mountRequest as ValidateFunction,
  'remove-request': removeRequest as ValidateFunction,
};

export function validateRequest<K extends keyof RequestTypes>(kind: K, value: unknown): ValidationResult<RequestTypes[K]> {
  return runValidator(validators[kind], value);
}
