import { DefenderErrorCode } from '@urs/defender';
import { vulnerabilitiesMissingReason } from '@urs/contracts';
import { missing, notHeld, unreadableInExport } from '../src/enrichment';
import { NOT_IN_EXPORT_SNAPSHOT } from '@urs/contracts';

// The codes the scorer keeps on a VMS record (`missingReasons`) are the vuln-fetcher's own: a code renamed
// here would make every such device `FETCH_FAILED` to VMS.
describe("the vuln-fetcher's fetch errors as the reasons VMS is given", () => {
  it('should keep the codes of a device not held, not yet in the snapshot, not found or unreadable', () => {
    expect(vulnerabilitiesMissingReason(notHeld({ id: 'd1', isExcluded: true }))).toBe('EXCLUDED');
    expect(vulnerabilitiesMissingReason({ code: NOT_IN_EXPORT_SNAPSHOT })).toBe('NOT_IN_EXPORT_SNAPSHOT');
    expect(vulnerabilitiesMissingReason({ code: DefenderErrorCode.NOT_FOUND })).toBe('DEFENDER_NOT_FOUND');
    expect(vulnerabilitiesMissingReason(unreadableInExport())).toBe('DEFENDER_UNREADABLE_RECORDS');
  });

  it('should say of an unreadable device that none of its CVE rows could be read, not none of its rows', () => {
    // Its rows of installed software without a CVE may have been read: only its CVE rows all were not.
    const { message } = unreadableInExport();
    expect(message).toMatch(/none of its CVE rows in the bulk export could be read/);
    expect(message).not.toMatch(/rows of the device/);
  });

  it("should give a batch gone on without its vulnerabilities the failure's reason, an excluded device its own", () => {
    const devices = missing([{ id: 'd1' }, { id: 'd2', isExcluded: true }], {
      code: DefenderErrorCode.THROTTLED,
      message: 'held back',
    });
    expect(devices.map((device) => vulnerabilitiesMissingReason(device.fetchError))).toEqual([
      'FETCH_FAILED',
      'EXCLUDED',
    ]);
  });
});
