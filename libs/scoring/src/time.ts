// The one reading of a timestamp every stage shares (`lastSeen` scored here, read by the Defender client, aged
// in `urs score`): `@urs/contracts`'.
export { parseTimestampMs, subMillisecondOf } from '@urs/contracts';
